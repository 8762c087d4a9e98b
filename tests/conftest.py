"""Fixtures shared across the test folders: the record fixtures, tiny image folders and tiny
training configs (made by `factories`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from factories import make_config, write_imagefolder
from twins.config import TrainConfig

# Checkpoints written by the seed's own MindSpore training code, with inputs and the logits that
# code produced (see the README beside them).
MINDSPORE_FIXTURES = Path(__file__).parent / "fixtures" / "mindspore"


@pytest.fixture
def seed_fixtures() -> Path:
    assert (MINDSPORE_FIXTURES / "seed_pcpvt_train.ckpt").is_file(), "fixtures missing"
    return MINDSPORE_FIXTURES


@pytest.fixture(scope="session")
def make_imagefolder():
    """`make_imagefolder(root, train_per_class, val_per_class, ...)`: `write_imagefolder`."""
    return write_imagefolder


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory) -> Path:
    """4 classes, 16 training images each, an uneven validation split of 5+4+3+2 = 14 images."""
    return write_imagefolder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(data, output, **changes)`: the config of a tiny, fast run."""

    def tiny(data: Path, output: Path, **changes) -> TrainConfig:
        return make_config(data_url=str(data), train_url=str(output), **changes)

    return tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and sharing the machine's cores does not slow
    them down by oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
