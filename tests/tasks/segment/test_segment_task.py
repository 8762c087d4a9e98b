"""The segmentation task in the fit loop: a tiny Semantic FPN on digit scenes (the ADE20K
layout), counted in iterations, evaluated with mIoU, killed and resumed exactly."""

from __future__ import annotations

import pytest
import torch

from factories import TINY_MODEL, make_config
from killed_runs import fit_killed_at_step, without_timings
from twins.tasks import fit
from twins.tasks.scenes import write_digit_scenes
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_digit_scenes(root, train=8, val=3, size=48, seed=0)
    return root


def segment_config(data, output, **changes):
    recipe = {
        "task": "segment",
        "arch": "semantic_fpn_svt_small",  # per-stage norms and windows: the most that differs
        "model_args": TINY_MODEL,
        "semantics": "official",
        "num_classes": 11,
        "reduce_zero_label": True,  # the scenes store class i as i + 1
        "img_scale": [96, 48],
        "crop_size": [48, 48],
        "batch_size": 4,
        "lr_scheduler": "poly_lr",
        "max_iters": 4,
        "warmup_iters": 1,
        "warmup_length": 0,
        "min_lr": 0.0,
        "eval_every": 2,
        "save_every": 2,
        "base_lr": 1e-3,
    }
    return make_config(data_url=str(data), train_url=str(output), **recipe | changes)


def test_a_segmentation_run_killed_within_an_epoch_resumes_exactly(scenes, tmp_path):
    unbroken = fit(segment_config(scenes, tmp_path / "unbroken"))
    assert {"val_mIoU", "val_mAcc", "val_aAcc"} <= unbroken.keys()
    assert unbroken["val_images"] == 3 and unbroken["best_mIoU"] == unbroken["best_score"]
    records = read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]

    config = segment_config(scenes, tmp_path / "run")
    fit_killed_at_step(config, 4)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 2
    resumed = fit(config)

    assert without_timings([resumed]) == without_timings([unbroken])
    assert without_timings(read_metrics(tmp_path / "run" / "metrics.jsonl")) == without_timings(
        records
    )
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_a_segmentation_checkpoint_says_its_task_classes_and_palette(scenes, tmp_path):
    fit(segment_config(scenes, tmp_path, max_iters=1, eval_every=1))
    meta = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["meta"]
    assert meta["task"] == "segment" and meta["arch"] == "semantic_fpn_svt_small"
    assert meta["class_names"][:2] == ["background", "0"] and len(meta["class_names"]) == 11
    assert len(meta["dataset"]["palette"]) == 11 and meta["preprocessing"]["img_scale"] == [96, 48]


def test_segmenters_synchronise_batchnorm_across_gpu_processes_only():
    from types import SimpleNamespace

    from twins import create_model
    from twins.tasks import task_named
    from twins.train.fit_loop import synchronised_batchnorm

    model = create_model("semantic_fpn_pcpvt_small", **TINY_MODEL)
    names = [name for name, _ in model.named_parameters()]
    gpus = SimpleNamespace(enabled=True, device=torch.device("cuda", 0))
    converted = synchronised_batchnorm(model, task_named("segment"), gpus)
    kinds = {type(m).__name__ for m in converted.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert [name for name, _ in converted.named_parameters()] == names
    cpus = SimpleNamespace(enabled=True, device=torch.device("cpu"))
    plain = create_model("semantic_fpn_pcpvt_small", **TINY_MODEL)
    assert synchronised_batchnorm(plain, task_named("segment"), cpus) is plain
    assert synchronised_batchnorm(plain, task_named("classify"), gpus) is plain


def test_a_config_that_reads_labels_otherwise_than_the_data_set_is_refused(scenes, tmp_path):
    from twins.errors import TwinsError

    config = segment_config(scenes, tmp_path, reduce_zero_label=False)
    with pytest.raises(TwinsError, match="reduce_zero_label=True"):
        fit(config)
