"""The detection tests' COCO-format data sets (`coco_files`), each in a fresh folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from coco_files import write_coco_train, write_coco_val


@pytest.fixture
def coco_train(tmp_path: Path) -> Path:
    return write_coco_train(tmp_path / "coco")


@pytest.fixture
def coco_val(tmp_path: Path) -> Path:
    return write_coco_val(tmp_path / "coco")


@pytest.fixture(scope="session")
def tiny_segmenter_run(tmp_path_factory) -> Path:
    """A trained tiny segmenter (`tiny_segmenter`), trained once for every test that uses it:
    the run folder, its data in `../data`."""
    from tiny_segmenter import train_tiny_segmenter

    return train_tiny_segmenter(tmp_path_factory.mktemp("tiny_segmenter"))
