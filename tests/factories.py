"""Test data made by the tests themselves: one ImageFolder writer and one factory of real training
configs (the conftest fixtures hand them out; `pythonpath` in pyproject.toml makes this folder
importable)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from twins.config import TrainConfig, build_config
from twins.tasks import task_named

# One colour per class: learnable in a few steps, whatever the crop or flip.
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]

# Every source of randomness of a run on: augmentation, Mixup/CutMix, drop path, EMA (with
# make_config's 64 training images: 4 steps per epoch at its batch of 16).
EVERY_RANDOM_DRAW = {
    "epochs": 2,
    "cooldown_epochs": 1,
    "mix_up": 0.8,
    "cutmix": 1.0,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "drop_path_rate": 0.1,
    "with_ema": True,
    "ema_decay": 0.9,
}

# A tiny model: a few thousand parameters, a few milliseconds a step.
TINY_MODEL = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}


def write_imagefolder(
    root: Path,
    train_per_class: int = 16,
    val_per_class: Sequence[int] = (5, 4, 3, 2),
    *,
    classes: Sequence[str] | None = None,
    size: tuple[int, int] = (32, 32),
    suffix: str = ".png",
    seed: int = 0,
) -> Path:
    """`root/train/<class>/<n><suffix>` and `root/val/...`: each class its colour plus noise,
    `size` (height, width) pixels; `val_per_class` gives each class's count (0 for none)."""
    classes = list(classes or [f"class_{index}" for index in range(len(val_per_class))])
    rng = np.random.default_rng(seed)
    for split, counts in (("train", [train_per_class] * len(classes)), ("val", val_per_class)):
        for index, (name, count) in enumerate(zip(classes, counts, strict=True)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                noise = rng.integers(-40, 40, size=(*size, 3))
                colour = np.array(COLOURS[index % len(COLOURS)])
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}{suffix}")
    return root


def make_config(**values) -> TrainConfig:
    """A real training config: small test-sized defaults (a tiny PCPVT on 32 px images, one
    process on the CPU, this toolkit's semantics), then `values`. A dense task's config gets
    the defaults of the keys it reads only (it refuses the others)."""
    defaults = {
        "semantics": "twins",
        "arch": "pcpvt_small",
        "model_args": TINY_MODEL,
        "num_classes": 4,
        "image_size": 32,
        "crop_scale": [0.5, 1.0],
        "auto_augment": None,
        "re_prob": 0.0,
        "mix_up": 0.0,
        "cutmix": 0.0,
        "batch_size": 16,
        "base_lr": 2e-3,
        "warmup_lr": 1e-4,
        "min_lr": 1e-4,
        "warmup_length": 1,
        "epochs": 3,
        "cooldown_epochs": 0,
        "drop_path_rate": 0.0,
        "num_parallel_workers": 0,
        # The compute threads are part of a run's numbers: the same in every run a test
        # compares, whatever its data workers (the default is the cores left after them).
        "threads": 1,
        "device_target": "CPU",
        "log_every": 1,
        "save_every": 1,
    }
    task = values.get("task", "classify")
    if task != "classify":
        reads = task_named(task).reads
        defaults = {key: value for key, value in defaults.items() if key in reads}
    return build_config({**defaults, **values})
