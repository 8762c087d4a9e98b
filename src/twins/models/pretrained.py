"""Where `pretrained=` weights come from, for every model over a Twins backbone (the
classifier, the segmenters, the detectors): a file of any format `twins.load_weights` reads,
(a path, a Hub-layout folder, `hf-hub:` id or `s3://` URL: `twins.weights.locate`), or True for
the published ImageNet-1k weights of the variant (timm's `timm/twins_<variant>.in1k` on the
Hugging Face Hub, fetched once into its cache; HF_HUB_OFFLINE=1 reads the cache only). A model
built on the meta device holds no weights, so it takes none; the shape a file records is used
where the caller does not give it.
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
    """The weights `pretrained` names for a model over `variant` built on `device` (a path,
    `hf-hub:` id or URL, `twins.weights.locate`): the published weights' id where it is True."""
    if device is not None and torch.device(device).type == "meta":
        raise TwinsError(
            "a model on the meta device holds no weights: build it without pretrained, or "
            "on a real device",
            argument="device",
        )
    return hub_weights(variant) if pretrained is True else pretrained


def hub_weights(variant: str) -> str:
    """`hf-hub:` id of the published weights of `variant` (`twins.weights.locate` fetches it
    once into the Hugging Face cache)."""
    return f"hf-hub:{HUB_REPOSITORIES[variant]}"
