"""The data tests' configs and image folders: the shared factories with the data builders'
defaults (two classes, every augmentation on)."""

from __future__ import annotations

from pathlib import Path

import pytest

import factories
from twins.config import TrainConfig

DATA_DEFAULTS = {
    "num_classes": 2,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "mix_up": 0.8,
    "cutmix": 1.0,
    "batch_size": 4,
    "crop_scale": [0.08, 1.0],
}


def data_config(**values) -> TrainConfig:
    return factories.make_config(**{**DATA_DEFAULTS, **values})


def write_cats_and_dogs(root: Path, per_class: int = 6) -> Path:
    """`root/train` and `root/val`, classes cat and dog, `per_class` 40x48 PNGs in each."""
    return factories.write_imagefolder(
        root, per_class, (per_class, per_class), classes=("cat", "dog"), size=(40, 48)
    )


@pytest.fixture
def make_config():
    """Factory of data configs (a fixture, so tests need not import this module)."""
    return data_config


@pytest.fixture
def make_image_folder():
    return write_cats_and_dogs


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes (cat, dog), six 40x48 RGB images per class and split."""
    return write_cats_and_dogs(tmp_path / "data")
