"""Small versions of each registry variant (its widths and heads, shallow stages), and the fused
CPU kernels made to serve their small shapes."""

import pytest

import twins
from twins.models import VARIANTS, fused


@pytest.fixture
def small_model():
    def build(name: str, **overrides):
        """The variant with two blocks per stage for SVT (LSA and GSA), one for PCPVT."""
        depths = (2, 2, 2, 2) if VARIANTS[name].get("wss") else (1, 1, 1, 1)
        return twins.create_model(name, **{"depths": depths, **overrides})

    return build


@pytest.fixture
def fused_everywhere(monkeypatch):
    """The fused kernels for every product, however small, and MLP chunks of a few dozen rows,
    so that small models run them (and several chunks, the last one short)."""
    monkeypatch.setattr(fused, "_MIN_OUTPUT_ELEMENTS", 0)
    monkeypatch.setattr(fused, "_THIN_IN_FEATURES", 1 << 30)
    monkeypatch.setattr(fused, "_CHUNKED_TRAINING_ELEMENTS", 0)
    monkeypatch.setattr(fused, "_MLP_CHUNK_ELEMENTS", 40 * 64)
