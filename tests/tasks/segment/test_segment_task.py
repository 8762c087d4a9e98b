"""The segmentation task in the fit loop: a tiny Semantic FPN on digit scenes (the ADE20K
layout), counted in iterations, evaluated with mIoU, killed and resumed exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from factories import TINY_MODEL, make_config
from killed_runs import fit_killed_at_step, without_timings
from twins.cli.main import main
from twins.errors import TwinsError
from twins.tasks import fit
from twins.tasks.scenes import SceneLayout, write_digit_scenes
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_digit_scenes(root, train=8, val=3, layout=SceneLayout(size=48), seed=0)
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
    config = segment_config(scenes, tmp_path, reduce_zero_label=False)
    with pytest.raises(TwinsError, match="reduce_zero_label=True"):
        fit(config)


def _copy_with_label(scenes, root, split, stem, image, label):
    """A copy of the scenes with one more pair: `image` (H x W x 3) and its label (H x W)."""
    shutil.copytree(scenes, root)
    Image.fromarray(image).save(root / "images" / split / f"{stem}.jpg")
    Image.fromarray(label).save(root / "annotations" / split / f"{stem}.png")
    return root


def test_a_label_value_that_is_no_class_stops_training_in_one_line_from_a_worker(scenes, tmp_path):
    label = np.full((48, 48), 2, dtype=np.uint8)
    label[10, 20] = 39  # the scenes store classes 1..11
    image = np.zeros((48, 48, 3), dtype=np.uint8)
    data = _copy_with_label(scenes, tmp_path / "data", "training", "bad", image, label)
    config = segment_config(data, tmp_path / "run", num_parallel_workers=1)
    with pytest.raises(TwinsError) as error:
        fit(config)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    assert str(data / "annotations" / "training" / "bad.png") in message and "39" in message


def test_eval_refuses_a_label_value_that_is_no_class_naming_file_and_value(
    tiny_segmenter_run, tmp_path, capsys
):
    label = np.full((48, 48), 2, dtype=np.uint8)
    label[0, 0] = 12  # one past the 11 classes, stored i + 1
    image = np.zeros((48, 48, 3), dtype=np.uint8)
    data = tiny_segmenter_run.parent / "data"
    data = _copy_with_label(data, tmp_path / "data", "validation", "bad", image, label)
    args = ["eval", "-c", str(tiny_segmenter_run / "config.yaml"), "--data", str(data)]
    args += ["--checkpoint", str(tiny_segmenter_run / "checkpoints" / "last.pt")]
    assert main([*args, "num_parallel_workers=1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "12" in error
    assert str(data / "annotations" / "validation" / "bad.png") in error


@pytest.mark.parametrize("size", [(2000, 1), (1, 2000)])
def test_extreme_aspect_ratios_train_and_evaluate_in_a_worker(scenes, tmp_path, size):
    width, height = size
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    label = np.full((height, width), 3, dtype=np.uint8)
    data = _copy_with_label(scenes, tmp_path / "data", "training", "line", image, label)
    Image.fromarray(image).save(data / "images" / "validation" / "line.jpg")
    Image.fromarray(label).save(data / "annotations" / "validation" / "line.png")
    # 9 training images in batches of 3: the line is in one of the three steps' batches
    changes = {"num_parallel_workers": 1, "batch_size": 3, "max_iters": 3, "eval_every": 3}
    result = fit(segment_config(data, tmp_path / "run", **changes, save_every=3))
    assert result["val_images"] == 4
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs[-1]["step"] == 3 and epochs[-1]["images_skipped"] == 0
