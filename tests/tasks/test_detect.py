"""The detection task in the fit loop: a tiny RetinaNet on digit scenes in the COCO layout,
counted in epochs with the step lr recipe, evaluated with COCO box AP, killed within an epoch
and resumed exactly; `twins eval --json` and `twins.load_model` on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import twins
import twins.train.trainer
from factories import TINY_MODEL, make_config
from twins.dense.digit_scenes import make_scene, split_digits
from twins.train import fit
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

TIMINGS = ("epoch_seconds", "images_per_s", "output")
SPLITS = {"train": "training", "val": "validation"}


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the run catches it."""


def category_id(digit: int) -> int:
    """COCO ids that are not the labels: label i + 1 is the i-th smallest id."""
    return 3 * digit + 2


def write_coco_scenes(root: Path, counts: dict[str, int], size: int = 64) -> Path:
    """Digit scenes in the year-less COCO layout: `annotations/instances_{train,val}.json` with
    boxes and RLE masks, images in `train/` and `val/`."""
    digits = split_digits()
    categories = [{"id": category_id(d), "name": str(d)} for d in range(10)]
    (root / "annotations").mkdir(parents=True)
    for split, count in counts.items():
        (root / split).mkdir()
        images, annotations = [], []
        for index in range(count):
            scene = make_scene(
                np.random.default_rng([1, index, len(split)]), *digits[SPLITS[split]]
            )
            name = f"{index:05d}.png"
            Image.fromarray(scene.image).save(root / split / name)
            images.append({"id": index + 1, "file_name": name, "height": size, "width": size})
            for digit in scene.instances:
                x0, y0, x1, y1 = digit.box
                rle = mask_utils.encode(np.asfortranarray(digit.mask.astype(np.uint8)))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index + 1,
                        "category_id": category_id(digit.digit),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": int(digit.mask.sum()),
                        "iscrowd": 0,
                        "segmentation": {"size": [size, size], "counts": rle["counts"].decode()},
                    }
                )
        content = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_coco_scenes(tmp_path_factory.mktemp("coco"), {"train": 4, "val": 3})


def detect_config(data, output, **changes):
    recipe = {
        "task": "detect",
        "arch": "retinanet_svt_small",  # per-stage norms and windows: the most that differs
        "model_args": TINY_MODEL,
        "semantics": "official",
        "num_classes": 10,
        "img_scale": [96, 64],
        "scale_policy": "single",
        "batch_size": 2,
        "base_lr": 1e-3,
        "weight_decay": 1e-4,
        "no_decay_keys": [],
        "clip_global_norm_value": 0.0,
        "label_smoothing": 0.0,
        "lr_scheduler": "step_lr",
        "lr_steps": [1],
        "warmup_length": 0,
        "warmup_iters": 3,
        "epochs": 2,
        "save_every_steps": 1,
    }
    return make_config(data_url=str(data), train_url=str(output), **recipe | changes)


def test_a_detection_run_killed_within_an_epoch_resumes_exactly(scenes, tmp_path, monkeypatch):
    unbroken = fit(detect_config(scenes, tmp_path / "unbroken"))
    assert {"val_bbox_AP", "val_bbox_AP50", "val_bbox_ARl"} <= unbroken.keys()
    assert unbroken["val_images"] == 3 and unbroken["best_bbox_AP"] == unbroken["best_score"]
    records = read_metrics(tmp_path / "unbroken" / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["train_classification"] > 0 and r["train_bbox_regression"] > 0 for r in steps)
    # step_lr: warmup over 3 iterations from 0.001 x lr, then x 0.1 after epoch 1.
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(1e-6) and lrs[1] == pytest.approx(1e-3 * (1 - 2 / 3 * 0.999))
    assert lrs[2:] == pytest.approx([1e-4 * (1 - 1 / 3 * 0.999), 1e-4])

    real_step, calls = twins.train.trainer.optimizer_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return real_step(*args, **kwargs)

    config = detect_config(scenes, tmp_path / "run")
    monkeypatch.setattr(twins.train.trainer, "optimizer_step", dying_step)
    with pytest.raises(Killed):
        fit(config)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 3
    resumed = fit(config)

    def without_timings(items):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in items]

    assert without_timings([resumed]) == without_timings([unbroken])
    assert without_timings(read_metrics(tmp_path / "run" / "metrics.jsonl")) == without_timings(
        records
    )
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
