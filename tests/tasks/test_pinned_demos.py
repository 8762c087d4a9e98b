"""The three demos, with a short budget and a fixed seed, write the metrics recorded before
the code moved into one package per task (`fixtures/pinned_demos`): line for line, bit for bit
on the CPU they were recorded on, within a float tolerance on another (its kernels differ)."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path

import pytest
import torch

from twins.tasks.classify.demo import run_demo
from twins.tasks.detect.demo import run_detect_demo
from twins.tasks.segment.demo import run_segment_demo

PINNED = Path(__file__).resolve().parents[1] / "fixtures" / "pinned_demos"
BUDGET = ["max_iters=6", "eval_every=3", "warmup_iters=2", "log_every=1"]
TIMINGS = {"epoch_seconds", "images_per_s"}


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in lines.splitlines() if "Model name" in line]
    return names[0] if names else platform.processor()


def run(task: str, output: Path) -> Path:
    quiet = lambda line: None  # noqa: E731
    if task == "classify":
        run_demo(output, ["epochs=1", "warmup_length=0"], quiet)
    elif task == "segment":
        run_segment_demo(output, BUDGET, quiet, train_scenes=32, val_scenes=4)
    else:
        run_detect_demo(output, BUDGET, quiet, scenes={"train": 24, "val": 6})
    return output / "metrics.jsonl"


def same(recorded: object, now: object, exact: bool) -> bool:
    if isinstance(recorded, float) and isinstance(now, float) and not exact:
        return math.isclose(recorded, now, rel_tol=2e-2, abs_tol=1e-3)
    return recorded == now


@pytest.mark.parametrize("task", ["classify", "segment", "detect"])
def test_the_demo_writes_the_pinned_metrics(task, tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        written = run(task, tmp_path / task).read_text().splitlines()
    finally:
        torch.set_num_threads(previous)
    recorded = (PINNED / f"{task}.jsonl").read_text().splitlines()
    exact = cpu_model() == (PINNED / "CPU").read_text().strip()
    assert len(written) == len(recorded)
    for line, (then, now) in enumerate(zip(recorded, written, strict=True), start=1):
        then, now = json.loads(then), json.loads(now)
        assert then.keys() == now.keys(), line
        differing = [
            key for key in then if key not in TIMINGS and not same(then[key], now[key], exact)
        ]
        assert differing == [], (line, {key: (then[key], now[key]) for key in differing})
