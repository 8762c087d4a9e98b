"""Helpers of the weights tests: the seed checkpoints' model shapes, and tiny models."""

import twins

# The fixtures' model shapes (fixtures/mindspore/README.md); heads and windows are the _small ones.
SEED_MODELS = {
    "pcpvt": ("pcpvt_small", {"embed_dims": (16, 32, 40, 64), "depths": (2, 2, 2, 2)}),
    "svt": ("svt_small", {"embed_dims": (16, 32, 64, 128), "depths": (2, 2, 2, 2)}),
}


def tiny_model(family: str, num_classes: int = 10, **overrides):
    arch, shape = SEED_MODELS[family]
    return twins.create_model(arch, num_classes=num_classes, **{**shape, **overrides})
