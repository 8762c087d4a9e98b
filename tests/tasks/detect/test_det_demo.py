"""`twins demo --task detect`: digit scenes in the COCO layout, a Twins RetinaNet trained into
DIR through the fit loop, which `twins train -c DIR/config.yaml --data DIR/data` reproduces
(also killed at a random step and run again); `twins eval` and pycocotools on `twins predict
--json` agree on its box AP. The full demo and its bar are slow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from killed_runs import killed_at_step
from twins.cli.main import main
from twins.tasks.detect.demo import LAYOUT, run_detect_demo, write_detection_scenes
from twins.tasks.scenes import SceneLayout
from twins.train.resume import load_checkpoint
from twins.weights import load_weights, save_weights

FAULTY_TWINS = Path(__file__).parents[2] / "train" / "faulty_twins.py"
# A reduced demo: 24 training scenes (3 steps an epoch), 9 iterations, evaluated at the end.
REDUCED = ["max_iters=9", "eval_every=9", "warmup_iters=3", "base_lr=0.002"]
SCENES = {"train": 24, "val": 6}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("demo")
    torch.set_num_threads(1)
    return output, run_detect_demo(output, REDUCED, say=lambda line: None, scenes=SCENES)


def test_demo_writes_coco_data_a_run_and_a_picture(demo) -> None:
    output, result = demo
    truth = COCO(output / "data" / "annotations" / "instances_val.json")
    assert len(truth.getImgIds()) == 6 and len(truth.getCatIds()) == 10
    assert all((output / "data" / "val" / i["file_name"]).is_file() for i in truth.imgs.values())
    train = json.loads((output / "data" / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 24 and all("segmentation" in a for a in train["annotations"])
    for name in ("config.yaml", "checkpoints/last.pt", "metrics.jsonl", "predictions.png"):
        assert (output / name).is_file(), name
    assert result["images"] == 6 and 0 <= result["bbox_AP50"] <= 100
    meta = load_checkpoint(output / "checkpoints" / "last.pt")["meta"]
    assert meta["task"] == "detect" and meta["dataset"]["category_ids"] == list(range(1, 11))


def test_scenes_take_the_digits_per_scene_and_their_side(tmp_path) -> None:
    root = write_detection_scenes(tmp_path, 6, 2, SceneLayout(count=(1, 1), side=(0.5, 0.5)))
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert sorted(a["image_id"] for a in train["annotations"]) == list(range(1, 7))
    assert all(max(a["bbox"][2:]) <= 32 for a in train["annotations"])  # ink of 32 px digits
    manifest = json.loads((root / "scenes.json").read_text())
    assert manifest["count"] == [1, 1] and manifest["cell"] is None


def test_the_demo_scenes_centre_light_digits_in_the_cells_of_a_grid(tmp_path) -> None:
    """As the recipe's anchors expect them: one 32 px digit a cell of the 64 px scene's 2 x 2
    grid, its ink box centred in the cell (at 16 or 48 px), lighter than the ground."""
    root = write_detection_scenes(tmp_path, 8, 2, LAYOUT)
    train = json.loads((root / "annotations" / "instances_train.json").read_text())
    by_image: dict[int, list[list[float]]] = {}
    for annotation in train["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["bbox"])
    assert all(2 <= len(boxes) <= 4 for boxes in by_image.values())
    for image_id, boxes in by_image.items():
        pixels = np.asarray(Image.open(root / "train" / f"{image_id:06d}.png"), dtype=float)
        cells = set()
        for x, y, w, h in boxes:
            centre = (x + w / 2, y + h / 2)
            cells.add(tuple(int(c // 32) for c in centre))
            assert all(abs(c - (c // 32 * 32 + 16)) <= 4 for c in centre), (image_id, boxes)
            assert h >= 24  # digits drawn at the cell's 32 px, not smaller
            box = pixels[int(y) : int(y + h), int(x) : int(x + w)].mean(2)
            assert box.max() > pixels.mean(2).mean() + 50  # light ink on a darkened ground
        assert len(cells) == len(boxes)  # one digit a cell
    manifest = json.loads((root / "scenes.json").read_text())
    assert manifest["cell"] == 32 and manifest["light_ink"] is True
    # Another layout is another set of scenes: the folder is rewritten, not reused.
    write_detection_scenes(tmp_path, 8, 2, replace(LAYOUT, cell=None, light_ink=False))
    assert json.loads((root / "scenes.json").read_text())["cell"] is None


def test_pycocotools_on_predict_json_gives_the_box_ap_eval_prints(demo, tmp_path, capsys) -> None:
    """On the reduced demo's weights with the classifier's bias raised, so that its few
    training steps give detections to score (about 0.7 each, at every anchor)."""
    output, _ = demo
    weights = load_weights(output / "checkpoints" / "last.pt")
    weights["head.classification_head.cls_logits.bias"] += 5.0
    save_weights(weights, tmp_path / "detects.safetensors")
    checkpoint = str(tmp_path / "detects.safetensors")
    config, data = str(output / "config.yaml"), str(output / "data")
    assert main(["eval", "-c", config, "--checkpoint", checkpoint, "--data", data, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    annotation_file = Path(data) / "annotations" / "instances_val.json"
    args = ["predict", "--checkpoint", checkpoint, f"{data}/val", "--coco", str(annotation_file)]
    assert main([*args, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results, "the reduced demo's model detects nothing: the check would be empty"
    truth = COCO(annotation_file)
    evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert 100 * evaluation.stats[0] == pytest.approx(evaluated["bbox_AP"], abs=1e-9)
    assert 100 * evaluation.stats[1] == pytest.approx(evaluated["bbox_AP50"], abs=1e-9)


def _same_weights(a: Path, b: Path) -> bool:
    expected, found = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return expected.keys() == found.keys() and all(
        torch.equal(expected[k], found[k]) for k in expected
    )


def _train_command(output: Path, again: Path) -> list[str]:
    config, data = str(output / "config.yaml"), str(output / "data")
    return ["train", "-c", config, "--data", data, "--output", str(again)]


def test_twins_train_on_the_demo_config_stopped_and_resumed_gives_its_weights(
    demo, tmp_path
) -> None:
    """The run dies at a random optimizer step (in this process: the fit loop as `twins train`
    calls it); the same command again ends with the demo's weights."""
    output, _ = demo
    step = random.Random(time.time_ns()).randint(2, 8)  # of 9: a random moment of the run
    killed_at_step(lambda: main(_train_command(output, tmp_path / "again")), step)
    assert main(_train_command(output, tmp_path / "again")) == 0
    last = "checkpoints/last.pt"
    assert _same_weights(output / last, tmp_path / "again" / last), step


@pytest.mark.slow
def test_twins_train_killed_with_sigkill_and_run_again_gives_the_demo_weights(
    demo, tmp_path
) -> None:
    output, _ = demo
    command = [sys.executable, str(FAULTY_TWINS), *_train_command(output, tmp_path / "again")]
    env = dict(os.environ)  # the config.yaml says the demo's compute threads
    step = random.Random(time.time_ns()).randint(2, 8)
    killed = subprocess.run(
        command, env={**env, "TWINS_KILL_AT_STEP": str(step)}, capture_output=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, (step, killed.stderr[-2000:])
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    last = "checkpoints/last.pt"
    assert _same_weights(output / last, tmp_path / "again" / last), step


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_meets_its_bar_in_three_minutes(tmp_path) -> None:
    """The bar: box AP50 of 60% on the held-out scenes within 3 minutes of wall time (96.7% in
    1 min 28 s to 1 min 44 s measured on 2 shared cores: configs/demo_detect.yaml)."""
    result = run_detect_demo(tmp_path / "demo", say=lambda line: None)
    assert result["bbox_AP50"] >= 60, result
    assert result["seconds"] < 180, result
