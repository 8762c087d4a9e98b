"""The detection task in the fit loop: a tiny RetinaNet on digit scenes in the COCO layout,
counted in epochs with the step lr recipe, evaluated with COCO box AP, killed within an epoch
and resumed exactly; `twins eval --json` and `twins.load_model` on what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from factories import TINY_MODEL, make_config
from killed_runs import fit_killed_at_step, without_timings
from twins.cli.main import main
from twins.config import save_config
from twins.errors import TwinsError
from twins.seeds import derive_seed, seeded
from twins.tasks import fit, task_for
from twins.tasks.detect.demo import SPLITS, coco_annotation
from twins.tasks.detect.task import DetectTask
from twins.tasks.scenes import make_scene, split_digits
from twins.train import build_model
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint
from twins.weights import load_weights, model_metadata, save_weights


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
                category = category_id(digit.digit)
                annotations.append(
                    coco_annotation(digit, len(annotations) + 1, index + 1, category)
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
        "lr_scheduler": "step_lr",
        "lr_steps": [1],
        "warmup_length": 0,
        "warmup_iters": 3,
        "epochs": 2,
        "save_every_steps": 1,
    }
    return make_config(data_url=str(data), train_url=str(output), **recipe | changes)


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    """(fit's result, output folder) of the unbroken run, on one thread as the tests' own runs
    (the function-scoped `one_thread` comes after this fixture): sums over other thread counts
    round otherwise."""
    output = tmp_path_factory.mktemp("unbroken")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(detect_config(scenes, output)), output
    finally:
        torch.set_num_threads(threads)


def test_a_detection_run_killed_within_an_epoch_resumes_exactly(
    scenes, trained, tmp_path, monkeypatch
):
    unbroken, output = trained
    assert {"val_bbox_AP", "val_bbox_AP50", "val_bbox_ARl"} <= unbroken.keys()
    assert unbroken["val_images"] == 3 and unbroken["best_bbox_AP"] == unbroken["best_score"]
    records = read_metrics(output / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["train_classification"] > 0 and r["train_bbox_regression"] > 0 for r in steps)
    # step_lr: warmup over 3 iterations from 0.001 x lr, then x 0.1 after epoch 1.
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(1e-6) and lrs[1] == pytest.approx(1e-3 * (1 - 2 / 3 * 0.999))
    assert lrs[2:] == pytest.approx([1e-4 * (1 - 1 / 3 * 0.999), 1e-4])

    config = detect_config(scenes, tmp_path / "run")
    fit_killed_at_step(config, 4)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 3
    resumed = fit(config)

    assert without_timings([resumed]) == without_timings([unbroken])
    assert without_timings(read_metrics(tmp_path / "run" / "metrics.jsonl")) == without_timings(
        records
    )
    a = load_checkpoint(output / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_a_detection_checkpoint_says_its_categories_and_scale(trained):
    _, output = trained
    meta = load_checkpoint(output / "checkpoints" / "best.pt")["meta"]
    assert meta["task"] == "detect" and meta["arch"] == "retinanet_svt_small"
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["dataset"]["category_ids"] == [category_id(d) for d in range(10)]
    assert (
        meta["preprocessing"]["img_scale"] == [96, 64] and meta["preprocessing"]["min_size"] == 64
    )
    assert meta["model_args"]["resize_in_model"] is False  # the data pipeline resizes


def test_eval_json_prints_cocos_twelve_numbers(scenes, trained, capsys):
    _, output = trained
    argv = ["eval", "-c", str(output / "config.yaml"), "--data", str(scenes), "--json"]
    assert main([*argv, "--checkpoint", str(output / "checkpoints" / "last.pt")]) == 0
    result = json.loads(capsys.readouterr().out)
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    assert {f"bbox_{name}" for name in names} <= result.keys()
    assert not any(key.startswith("segm_") for key in result)  # RetinaNet: no masks
    assert result["images"] == 3 and result["arch"] == "retinanet_svt_small"
    assert result["bbox_AP"] == trained[0]["val_bbox_AP"]  # what the run's last epoch measured


def test_load_model_rebuilds_the_trained_detector(trained):
    _, output = trained
    model = twins.load_model(output / "checkpoints" / "last.pt")
    weights = load_checkpoint(output / "checkpoints" / "last.pt")["model"]
    assert model.arch == "retinanet_svt_small" and model.task == "detect"
    assert model.num_classes == 10 and not model.training
    state = model.state_dict()
    assert state.keys() == weights.keys()
    assert all(torch.equal(state[name], weights[name]) for name in weights)
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        (found,) = model([image])
    assert set(found) == {"boxes", "labels", "scores"}


def test_the_3x_pipeline_draws_detrs_sizes_scaled_to_img_scale(scenes):
    config = detect_config(scenes, scenes / "unused", scale_policy="detr")
    train, val, names = DetectTask().datasets(config)
    sides = set()
    for index in range(len(train)):
        for epoch in range(6):
            with seeded(derive_seed(0, epoch, index)):
                image, target = train[index]
            sides.add(min(image.shape[-2:]))
            assert target["boxes"].canvas_size == tuple(image.shape[-2:])
    # 480, 512, ..., 800 at img_scale [1333, 800]; here short side 64: x 0.08
    assert sides <= {round(side * 0.08) for side in range(480, 801, 32)} and len(sides) > 2
    assert [tuple(val[i][0].shape) for i in range(len(val))] == [(3, 64, 64)] * 3
    assert names == [str(d) for d in range(10)]


@pytest.mark.slow
def test_a_mask_rcnn_run_reports_mask_ap_and_each_loss(scenes, tmp_path):
    result = fit(detect_config(scenes, tmp_path, arch="maskrcnn_svt_small", epochs=1))
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    assert {f"val_{kind}_{name}" for kind in ("bbox", "segm") for name in names} <= result.keys()
    (step, *_) = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "step"]
    parts = ("classifier", "box_reg", "mask", "objectness", "rpn_box_reg")
    assert all(step[f"train_loss_{part}"] > 0 for part in parts)
    assert step["train_loss"] == pytest.approx(sum(step[f"train_loss_{part}"] for part in parts))


@pytest.mark.slow
def test_eval_under_torchrun_counts_each_image_once(scenes, tmp_path, capsys):
    # A fresh Mask R-CNN: box and mask numbers; rank 0 alone holds 2 of the 3 images.
    config = detect_config(scenes, tmp_path, arch="maskrcnn_svt_small", batch_size=1)
    save_config(config, tmp_path / "config.yaml")
    torch.manual_seed(0)
    model = build_model(config, task_for(config))
    save_weights(model.state_dict(), tmp_path / "w.safetensors", metadata=model_metadata(model))
    argv = ["eval", "-c", str(tmp_path / "config.yaml"), "--checkpoint"]
    argv += [str(tmp_path / "w.safetensors"), "--json"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*torchrun, "-m", "twins", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    (shared,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert main(argv) == 0
    alone = json.loads(capsys.readouterr().out)
    assert shared["images"] == alone["images"] == 3  # 2 + 1 over the two processes
    assert "segm_ARl" in shared
    assert shared["skipped"] == alone["skipped"] == {"count": 0, "files": []}
    numbers = [k for k in alone if k not in ("checkpoint", "skipped")]
    assert {k: shared[k] for k in numbers} == pytest.approx({k: alone[k] for k in numbers})


def _untrained(config, path: Path) -> Path:
    """A fresh detector of the config, saved with the metadata a training run writes."""
    torch.manual_seed(0)
    model = build_model(config, task_for(config))
    metadata = model_metadata(model, [str(d) for d in range(10)])
    metadata["dataset"] = {"category_ids": [category_id(d) for d in range(10)]}
    save_weights(model.state_dict(), path, metadata=metadata)
    return path


def test_eval_json_names_the_images_it_skipped(tmp_path, capsys):
    data = write_coco_scenes(tmp_path / "coco", {"train": 1, "val": 3})
    (data / "val" / "00001.png").write_bytes(b"")
    config = detect_config(data, tmp_path / "run")
    save_config(config, tmp_path / "config.yaml")
    checkpoint = _untrained(config, tmp_path / "w.safetensors")
    argv = ["eval", "-c", str(tmp_path / "config.yaml"), "--checkpoint", str(checkpoint)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2
    assert result["skipped"] == {"count": 1, "files": [str(data / "val" / "00001.png")]}
    assert main(argv) == 0
    assert "(2 images; 1 skipped" in capsys.readouterr().out


def _rewrite(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_training_data_without_annotations_says_so_not_lower_batch_size(tmp_path):
    data = write_coco_scenes(tmp_path / "coco", {"train": 2, "val": 1})
    train_file = data / "annotations" / "instances_train.json"
    _rewrite(train_file, lambda content: content.update(annotations=[]))
    with pytest.raises(TwinsError) as raised:
        fit(detect_config(data, tmp_path / "run"))
    message = str(raised.value)
    assert f"no image of {train_file} has a usable annotation" in message
    assert "2 image(s) without a usable annotation left out (e.g. 00000.png, 00001.png)" in message
    assert "batch_size" not in message and "\n" not in message


def test_differing_category_lists_name_their_first_difference(tmp_path):
    data = write_coco_scenes(tmp_path / "coco", {"train": 2, "val": 1})

    def change(content):  # digit 5's id: 17 in train, 18 in val
        content["categories"][5]["id"] = 18
        for entry in content["annotations"]:
            entry["category_id"] = 18 if entry["category_id"] == 17 else entry["category_id"]

    _rewrite(data / "annotations" / "instances_val.json", change)
    with pytest.raises(TwinsError, match=r"position 6: 18 vs 17"):
        DetectTask().datasets(detect_config(data, tmp_path / "run"))


def test_eval_on_other_categories_names_the_first_difference(tmp_path, capsys):
    data = write_coco_scenes(tmp_path / "coco", {"train": 1, "val": 1})
    config = detect_config(data, tmp_path / "run")
    save_config(config, tmp_path / "config.yaml")
    checkpoint = _untrained(config, tmp_path / "w.safetensors")
    weights = load_weights(checkpoint)
    weights.metadata["dataset"]["category_ids"][7] = 99  # digit 7: 23 in the val file
    save_weights(weights, checkpoint)
    argv = ["eval", "-c", str(tmp_path / "config.yaml"), "--checkpoint", str(checkpoint)]
    assert main(argv) != 0
    error = capsys.readouterr().err.strip()
    assert "position 8: 23 vs 99" in error and len(error.splitlines()) == 1
