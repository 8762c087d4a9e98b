"""Configs and small generated image folders for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twins.train.config import TrainConfig, build_config


def data_config(**values) -> TrainConfig:
    """A real training config with small test-sized defaults for the keys the data builders
    read."""
    defaults = dict(
        data_url="",
        set="ImageNet",
        num_classes=2,
        image_size=32,
        crop_pct=0.875,
        interpolation="bicubic",
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        hflip=0.5,
        mix_up=0.8,
        cutmix=1.0,
        mixup_prob=1.0,
        switch_prob=0.5,
        mixup_mode="batch",
        label_smoothing=0.1,
        batch_size=4,
        num_parallel_workers=0,
        seed=0,
    )
    defaults.update(values)
    return build_config(defaults)


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6, size: int = 40
) -> Path:
    """Write `root/train` and `root/val` with `per_class` random RGB PNGs in each class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def make_config():
    """Factory of data configs (a fixture, so tests need not import this module)."""
    return data_config


@pytest.fixture
def make_image_folder():
    return write_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes (cat, dog), six 40x48 RGB images per class and split."""
    return write_image_folder(tmp_path / "data")
