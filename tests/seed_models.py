"""The model shapes of the seed's fixture checkpoints, and tiny models of those shapes (for the
weights and conversion tests; `pythonpath` in pyproject.toml makes this folder importable)."""

import twins
from twins.models import Twins

# The fixtures' model shapes (fixtures/mindspore/README.md); heads and windows are the _small ones.
SEED_MODELS = {
    "pcpvt": ("pcpvt_small", {"embed_dims": (16, 32, 40, 64), "depths": (2, 2, 2, 2)}),
    "svt": ("svt_small", {"embed_dims": (16, 32, 64, 128), "depths": (2, 2, 2, 2)}),
}


def tiny_model(family: str, num_classes: int = 10, **overrides) -> Twins:
    arch, shape = SEED_MODELS[family]
    return twins.create_model(arch, num_classes=num_classes, **{**shape, **overrides})
