"""Shared fixtures: a tiny generated ImageFolder and the config of a tiny, fast run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from twins.train import TrainConfig, build_config

# One colour per class: learnable in a few steps, whatever the crop or flip.
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]

TINY_MODEL = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}


def write_imagefolder(root: Path, train_per_class: int, val_per_class: list[int], seed: int = 0):
    """`root/train/<class>/*.png` and `root/val/<class>/*.png`, 32x32, colour plus noise."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", [train_per_class] * len(COLOURS)), ("val", val_per_class)):
        for index, (colour, count) in enumerate(zip(COLOURS, counts, strict=True)):
            folder = root / split / f"class_{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                noise = rng.integers(-40, 40, size=(32, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def make_imagefolder():
    """`make_imagefolder(root, train_per_class, val_per_class)`: write a tiny ImageFolder."""
    return write_imagefolder


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory) -> Path:
    """4 classes, 16 training images each, an uneven validation split of 5+4+3+2 = 14 images."""
    return write_imagefolder(tmp_path_factory.mktemp("data"), 16, [5, 4, 3, 2])


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(data, output, **changes)`: the config of a tiny, fast run."""
    return make_tiny_config


def make_tiny_config(data: Path, output: Path, **changes) -> TrainConfig:
    values = {
        "semantics": "twins",
        "arch": "pcpvt_small",
        "model_args": TINY_MODEL,
        "data_url": str(data),
        "train_url": str(output),
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
        "device_target": "CPU",
        "log_every": 1,
        "save_every": 1,
    }
    return build_config({**values, **changes})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and sharing the machine's cores does not slow
    them down by oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
