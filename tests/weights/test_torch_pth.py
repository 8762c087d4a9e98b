"""PyTorch files: official/timm state dicts, wrapped, prefixed, training checkpoints, unsafe files."""

import argparse
import os

import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.twins import Twins

import twins
from twins.cli.main import main
from twins.errors import TwinsError
from twins.weights import load_weights

TIMM_SHAPE = {
    "embed_dims": (16, 32, 40, 64),
    "num_heads": (1, 2, 5, 8),
    "mlp_ratios": (8, 8, 4, 4),
    "depths": (1, 1, 1, 1),
    "sr_ratios": (8, 4, 2, 1),
}
TWINS_SHAPE = {"embed_dims": (16, 32, 40, 64), "depths": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def timm_state_dict():
    torch.manual_seed(0)
    return Twins(num_classes=10, **TIMM_SHAPE).state_dict()


def _assert_same(loaded, expected):
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": sd, "arch": "twins_pcpvt_small", "epoch": 3},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {"model": sd, "args": argparse.Namespace(lr=5e-4, model="pcpvt_small_v0")},
    ],
    ids=["bare", "model", "timm-train", "ddp", "ddp-compiled", "deit-args"],
)
def test_official_and_timm_layouts_load_strictly(tmp_path, timm_state_dict, wrap):
    path = tmp_path / "weights.pth"
    torch.save(wrap(timm_state_dict), path)
    weights = load_weights(path)
    _assert_same(weights, timm_state_dict)
    assert weights.metadata["format"] == "torch" and weights.metadata["num_classes"] == 10
    model = twins.create_model("pcpvt_small", num_classes=10, **TWINS_SHAPE)
    model.load_state_dict(weights, strict=True)


def test_timm_training_checkpoint_names_its_arch(tmp_path, timm_state_dict):
    path = tmp_path / "timm.pth.tar"
    torch.save({"state_dict": timm_state_dict, "arch": "twins_pcpvt_small"}, path)
    assert load_weights(path).metadata["arch"] == "twins_pcpvt_small"


def test_training_checkpoint_chooses_raw_or_ema(tmp_path, timm_state_dict):
    ema = {name: tensor + 1 for name, tensor in timm_state_dict.items()}
    meta = {
        "arch": "pcpvt_small",
        "num_classes": 10,
        "act_layer": "gelu",
        "class_names": list("abcdefghij"),
    }
    checkpoint = {
        "format": "twins-checkpoint",
        "version": 1,
        "model": timm_state_dict,
        "model_ema": ema,
        "meta": meta,
        "epoch": 4,
        "optimizer": {"state": {}, "param_groups": []},
        "config": {"image_size": 96, "crop_pct": 0.9, "interpolation": "bilinear"},
    }
    path = tmp_path / "last.pt"
    torch.save(checkpoint, path)
    raw = load_weights(path)
    _assert_same(raw, timm_state_dict)
    assert raw.metadata["format"] == "twins-checkpoint"
    assert raw.metadata["class_names"] == list("abcdefghij")
    # Written before meta held the preprocessing (and before `semantics`): a centre crop.
    assert raw.metadata["preprocessing"] == {
        "image_size": 96,
        "crop_pct": 0.9,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
    }
    _assert_same(load_weights(path, ema=True), ema)

    del checkpoint["model_ema"]
    torch.save(checkpoint, path)
    with pytest.raises(TwinsError, match="no EMA weights"):
        load_weights(path, ema=True)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_files_that_would_run_code_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Exploit()}, path)
    with pytest.raises(TwinsError, match=r"evil.pth: refused, it holds Python objects"):
        load_weights(path)
    assert main(["convert", str(path), str(tmp_path / "w.safetensors")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "GLOBAL posix.system" in line and "state_dict()" in line
    assert "weights_only" not in line  # torch's advice to load it anyway is not passed on
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "w.safetensors").exists()


def test_files_without_twins_weights_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(2, 4)}, path)
    with pytest.raises(TwinsError, match="holds no Twins weights .*conv1.weight"):
        load_weights(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(TwinsError, match="holds a list, not a state dict"):
        load_weights(path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(TwinsError, match="holds no tensors"):
        load_weights(path)


def test_truncated_pth_is_refused(tmp_path, timm_state_dict):
    path = tmp_path / "cut.pth"
    torch.save(timm_state_dict, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(TwinsError, match="cannot be read as a PyTorch weights file"):
        load_weights(path)
