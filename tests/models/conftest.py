"""Small versions of each registry variant: its widths and heads, shallow stages."""

import pytest

import twins
from twins.models import VARIANTS


@pytest.fixture
def small_model():
    def build(name: str, **overrides):
        """The variant with two blocks per stage for SVT (LSA and GSA), one for PCPVT."""
        depths = (2, 2, 2, 2) if VARIANTS[name].get("wss") else (1, 1, 1, 1)
        return twins.create_model(name, **{"depths": depths, **overrides})

    return build
