"""What `pretrained=` of a detector takes, read and put into the model:

- "imagenet": classifier weights, any file `twins.load_weights` reads (official, timm, MindSpore,
  safetensors, training checkpoints): the backbone only, the rest stays freshly initialised;
- "mmdet": an mmdetection 2.x state dict (bare or under `state_dict`) of the official configs,
  renamed by `twins.tasks.detect.mmdet_layout`;
- "torchvision": the detector's own state dict (what `twins` writes for a detector).

The last two load strictly, the whole detector.
"""

from __future__ import annotations

import os
from typing import Literal

from torch import nn

from twins.models.backbone_weights import load_imagenet_into_backbone, read_imagenet_weights
from twins.tasks.detect.mmdet_layout import is_mmdet_layout, mmdet_to_torchvision
from twins.weights import StateDict, load_into_model
from twins.weights.load import read_stored
from twins.weights.locate import local_weights_file

Layout = Literal["imagenet", "mmdet", "torchvision"]


def read_detector_weights(path: str | os.PathLike, variant: str) -> tuple[Layout, StateDict]:
    """The layout of the weights in `path` and its tensors (see the module's docstring)."""
    path = local_weights_file(path)  # an `hf-hub:` id or URL: its local copy
    weights = read_stored(path)
    if weights is not None:
        if is_mmdet_layout(weights):
            return "mmdet", weights
        if any(name.startswith("backbone.body.") for name in weights):
            return "torchvision", weights
    return "imagenet", read_imagenet_weights(path, variant)


def load_detector_weights(
    model: nn.Module,
    layout: Layout,
    weights: StateDict,
    detector: str,
    source: str | os.PathLike = "the weights",
) -> None:
    """Put `weights` of `layout` (read from `source`) into `model`, a `detector` ("retinanet"
    or "maskrcnn")."""
    if layout == "imagenet":
        load_imagenet_into_backbone(model.backbone.body, weights, source, model.arch)
    elif layout == "mmdet":
        load_into_model(model, mmdet_to_torchvision(weights, detector))
    else:
        load_into_model(model, weights)
