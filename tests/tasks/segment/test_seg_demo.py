"""`twins demo --task segment`: a reduced demo end to end; `twins train` on its config and
data gives its weights exactly, also killed at a random step and run again; (slow) the full
demo meets its bar."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from twins.cli.main import main
from twins.tasks.segment.demo import RECIPE, run_segment_demo
from twins.train.resume import load_checkpoint

FAULTY_TWINS = Path(__file__).parents[2] / "train" / "faulty_twins.py"
# 32 training scenes at the recipe's batch of 16: 2 steps an epoch, so runs stop and resume
# within epochs and at their ends; evaluations every 3 iterations.
REDUCED = ["max_iters=6", "eval_every=3", "warmup_iters=2", "log_every=1"]
SCENES = {"train_scenes": 32, "val_scenes": 4}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    output = tmp_path_factory.mktemp("seg-demo") / "demo"
    lines: list[str] = []
    torch.set_num_threads(1)
    result = run_segment_demo(output, REDUCED, lines.append, **SCENES)
    return output, result, lines


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_demo_writes_the_scenes_config_checkpoints_and_picture(demo):
    output, result, lines = demo
    data = output / "data"
    for split, count in (("training", 32), ("validation", 4)):
        assert len(list((data / "images" / split).glob("*.jpg"))) == count
        assert len(list((data / "annotations" / split).glob("*.png"))) == count
    assert json.loads((data / "classes.json").read_text())["classes"][:2] == ["background", "0"]
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "predictions.png"):
        assert (output / name).is_file(), name
    assert (output / "checkpoints" / "last.pt").is_file()
    assert (output / "checkpoints" / "best.pt").is_file()
    with Image.open(output / "predictions.png") as picture:
        assert picture.width > 200 and picture.height > 200
    meta = load_checkpoint(output / "checkpoints" / "last.pt")["meta"]
    assert meta["task"] == "segment" and meta["model_args"]["neck_channels"] == 64
    assert 0 <= result["val_mIoU"] <= 100 and result["val_images"] == 4
    summary = "\n".join(lines)
    assert f"final val mIoU {result['val_mIoU']:.2f}%" in summary
    assert str(output / "predictions.png") in summary and str(data) in summary


def test_twins_train_on_the_demos_config_gives_its_weights(demo, tmp_path):
    output, _, _ = demo
    config, data = output / "config.yaml", output / "data"
    again = tmp_path / "again"
    assert main(["train", "-c", str(config), "--data", str(data), "--output", str(again)]) == 0
    assert same_weights(again / "checkpoints" / "last.pt", output / "checkpoints" / "last.pt")


@pytest.mark.slow  # two processes; tests/tasks/test_segment.py kills a segmentation run in-process
def test_twins_train_killed_at_a_random_step_and_run_again_gives_the_demos_weights(demo, tmp_path):
    output, _, _ = demo
    run = tmp_path / "run"
    step = random.randint(3, 6)  # after the first checkpoint (step 2, an epoch's end)
    command = [sys.executable, str(FAULTY_TWINS), "train", "-c", str(output / "config.yaml")]
    command += ["--data", str(output / "data"), "--output", str(run)]
    env = dict(os.environ)  # the config.yaml says the demo's compute threads
    killed = subprocess.run(
        command, env=env | {"TWINS_KILL_AT_STEP": str(step)}, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resum" in finished.stdout.lower(), (step, finished.stdout)
    assert same_weights(run / "checkpoints" / "last.pt", output / "checkpoints" / "last.pt"), step


def test_the_cli_offers_the_three_tasks_only(capsys):
    assert main(["demo", "--task", "pose"]) == 2
    assert "(choose from 'classify', 'segment', 'detect')" in capsys.readouterr().err


def test_the_recipe_ships_inside_the_package():
    repository = Path(__file__).resolve().parents[3] / "configs" / "demo_segment.yaml"
    assert RECIPE.is_file() and RECIPE.read_text() == repository.read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_full_demo_reaches_60_percent_miou_in_3_minutes(tmp_path):
    lines: list[str] = []
    result = run_segment_demo(tmp_path / "demo", say=lines.append)
    assert result["val_mIoU"] >= 60.0, lines
    assert result["seconds"] < 180, lines
