"""The checkpoint files of a run: round trip under weights_only, atomic writes, kept files,
random states."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from twins import create_model
from twins.atomic import save_torch
from twins.errors import TwinsError
from twins.preprocessing import eval_preprocessing
from twins.train import build_config, resume
from twins.train.resume import FORMAT, VERSION, CheckpointFiles, load_checkpoint
from twins.train.rng import capture_rng, restore_rng
from twins.weights import load_weights, model_metadata

TINY = {"embed_dims": (16, 32, 40, 64), "depths": (1, 1, 1, 1)}


def training_state(epoch: int = 1) -> dict:
    model = create_model("pcpvt_small", num_classes=4, **TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "model_ema": model.state_dict(),
        "meta": model_metadata(model, ["a", "b", "c", "d"], eval_preprocessing(build_config({}))),
        "epoch": epoch,
        "global_step": 10 * epoch,
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "rng": capture_rng(),
        "data": {"seed": 0, "epoch": epoch},
        "config": {"arch": "pcpvt_small", "beta": [0.9, 0.999]},
        "best_top1": 50.0,
        "metrics": {"val_top1": 50.0},
    }


def test_round_trip_with_weights_only(tmp_path):
    state = training_state()
    save_torch(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.keys() == state.keys()
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert loaded["optimizer"]["state"].keys() == state["optimizer"]["state"].keys()
    assert loaded["meta"]["arch"] == "pcpvt_small" and loaded["meta"]["num_classes"] == 4
    # The weights reader understands the file too, metadata included.
    weights = load_weights(tmp_path / "last.pt")
    assert weights.metadata["arch"] == "pcpvt_small"
    assert weights.metadata["class_names"] == ["a", "b", "c", "d"]
    model = create_model("pcpvt_small", **weights.metadata["model_args"])
    model.load_state_dict(weights, strict=True)


def test_keeps_last_best_and_newest_epoch_files(tmp_path):
    files = CheckpointFiles(tmp_path, keep_max=2, save_every=2)
    state = training_state()
    for epoch in range(1, 8):
        files.save(state | {"epoch": epoch}, is_best=epoch == 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "epoch_0004.pt", "epoch_0006.pt", "last.pt"]
    assert load_checkpoint(files.best)["epoch"] == 3
    assert "optimizer" not in load_checkpoint(files.best)  # best.pt is for using, not resuming
    assert load_checkpoint(files.last)["epoch"] == 7


def test_last_checkpoint_is_written_after_the_others(tmp_path, monkeypatch):
    # last.pt says where a restarted run begins: whatever else the epoch writes comes first.
    written = []
    real_save = resume.save_torch

    def save_torch(obj, path):
        written.append(path.name)
        real_save(obj, path)

    monkeypatch.setattr(resume, "save_torch", save_torch)
    CheckpointFiles(tmp_path, keep_max=5, save_every=1).save(training_state(2), is_best=True)
    assert written == ["best.pt", "epoch_0002.pt", "last.pt"]


def test_temporaries_of_killed_writes_are_removed(tmp_path):
    files = CheckpointFiles(tmp_path, keep_max=1, save_every=0)
    save_torch({"format": FORMAT, "epoch": 1}, files.last)
    (tmp_path / ".last.0a1b2c3d.tmp.pt").write_bytes(b"half a checkpoint")
    files.remove_temporaries()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rejects_files_that_are_not_training_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TwinsError, match="not a twins training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(TwinsError, match="cut.pt: cannot be read as a PyTorch weights file"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(TwinsError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_random_states_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    save_torch({"format": FORMAT, "rng": capture_rng()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected
