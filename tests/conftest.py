"""Fixtures shared across the test folders."""

from pathlib import Path

import pytest

# Checkpoints written by the seed's own MindSpore training code, with inputs and the logits that
# code produced (see the README beside them).
MINDSPORE_FIXTURES = Path(__file__).parent / "fixtures" / "mindspore"


@pytest.fixture
def seed_fixtures() -> Path:
    assert (MINDSPORE_FIXTURES / "seed_pcpvt_train.ckpt").is_file(), "fixtures missing"
    return MINDSPORE_FIXTURES
