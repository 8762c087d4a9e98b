"""Where `pretrained=` weights come from, for every model over a Twins backbone (the
classifier, the segmenters, the detectors): a file of any format `twins.load_weights` reads,
or True for the published ImageNet-1k weights of the variant (timm's, on the Hugging Face Hub,
fetched once into its cache). A model built on the meta device holds no weights, so it takes
none; the shape a file records is used where the caller does not give it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from twins.errors import TwinsError

# timm's published ImageNet-1k weights of each variant.
HUB_REPOSITORIES = {
    name: f"timm/twins_{name}.in1k"
    for name in ("pcpvt_small", "pcpvt_base", "pcpvt_large", "svt_small", "svt_base", "svt_large")
}


def pretrained_file(
    pretrained: str | os.PathLike | bool, variant: str, device: Any = None
) -> str | os.PathLike:
    """The file `pretrained` names for a model over `variant` built on `device`: the published
    weights where it is True."""
    if device is not None and torch.device(device).type == "meta":
        raise TwinsError(
            "a model on the meta device holds no weights: build it without pretrained, or "
            "on a real device",
            argument="device",
        )
    return hub_weights(variant) if pretrained is True else pretrained


def hub_weights(variant: str) -> str:
    """Path of the published weights of `variant`, fetched once into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    repository = HUB_REPOSITORIES[variant]
    try:
        return hf_hub_download(repository, "model.safetensors")
    except Exception as error:  # network, proxy or hub errors all end the same way
        raise TwinsError(
            f"cannot download the {variant} weights from {repository} ({error}): "
            "download model.safetensors by hand and pass its path as pretrained",
            argument="pretrained",
        ) from error
