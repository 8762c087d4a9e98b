"""A tiny trained segmenter for the tests of eval, predict and export: digit scenes in the
ADE20K layout and a 2-iteration fit of an SVT Semantic FPN (per-stage norms and windows)."""

from __future__ import annotations

from pathlib import Path

import yaml

from factories import TINY_MODEL, make_config
from twins.tasks import fit
from twins.tasks.scenes import SceneLayout, write_digit_scenes

RECIPE = {
    "task": "segment",
    "arch": "semantic_fpn_svt_small",
    "reduce_zero_label": True,
    "model_args": TINY_MODEL,
    "semantics": "official",
    "num_classes": 11,
    "img_scale": [96, 48],
    "crop_size": [48, 48],
    "batch_size": 4,
    "lr_scheduler": "poly_lr",
    "max_iters": 2,
    "warmup_iters": 1,
    "warmup_length": 0,
    "min_lr": 0.0,
    "eval_every": 2,
    "save_every": 2,
    "base_lr": 1e-3,
    "num_parallel_workers": 0,
}


def train_tiny_segmenter(root: Path) -> Path:
    """Writes `root/data` (8 training, 3 validation scenes) and trains into `root/run`; returns
    the run folder (`config.yaml`, `checkpoints/last.pt`)."""
    data, run = root / "data", root / "run"
    write_digit_scenes(data, train=8, val=3, layout=SceneLayout(size=48), seed=0)
    fit(make_config(data_url=str(data), train_url=str(run), **RECIPE))
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "segment"
    return run
