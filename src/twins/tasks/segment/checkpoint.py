"""Weights for a segmenter (`pretrained=` of the Semantic FPN and UperNet builders).

Two kinds of file:
- a segmenter checkpoint: the official mmsegmentation layout (the released UperNet ADE20K
  models, dense FACTS §3a-3d: `backbone.`, `neck.`, `decode_head.`, `auxiliary_head.` keys,
  a bare state dict or one under `state_dict`) or ours (a model's own `state_dict()`, or a
  training checkpoint). mmseg's FPN neck names become torchvision's, the backbone's unused
  classifier (`backbone.norm.*`, `backbone.head.*`) is dropped, and the rest loads strictly:
  every key used, every shape checked, one error naming what differs.
- an ImageNet classifier in any format `twins.load_weights` reads: the fine-tuning path. Its
  head and final norm are dropped and the backbone loads strictly; the SVT per-stage norms
  (`norm_list`) and the heads keep their initialisation; a note says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from twins.errors import TwinsError
from twins.models.backbone_weights import load_imagenet_into_backbone
from twins.weights import load_into_model, load_weights, mismatches
from twins.weights.load import read_stored
from twins.weights.locate import local_weights_file
from twins.weights.state_dict import StateDict

SEGMENTER_PREFIXES = ("backbone.", "neck.", "decode_head.", "auxiliary_head.")
# mmseg's FPN neck (ConvModules without norm) -> torchvision's FeaturePyramidNetwork.
NECK_RENAMES = (
    (re.compile(r"^neck\.lateral_convs\.(\d+)\.conv\."), r"neck.inner_blocks.\1.0."),
    (re.compile(r"^neck\.fpn_convs\.(\d+)\.conv\."), r"neck.layer_blocks.\1.0."),
)
# The classifier's parts a dense backbone does not have.
CLASSIFIER_ONLY = ("norm.", "head.")


def read_pretrained(path: str | os.PathLike, variant: str) -> StateDict:
    """The tensors of `path`: a segmenter's, keys as this toolkit names them, or a classifier's
    (official layout, as `twins.load_weights` gives them)."""
    path = local_weights_file(path)  # an `hf-hub:` id or URL: its local copy
    tensors = read_stored(path)
    if tensors is not None and any(name.startswith(SEGMENTER_PREFIXES) for name in tensors):
        return StateDict(segmenter_layout(tensors), {**tensors.metadata, "kind": "segmenter"})
    weights = load_weights(path, arch=variant)
    weights.metadata["kind"] = "classifier"
    return weights


def segmenter_layout(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmseg (or our own) segmenter state dict in this toolkit's names: mmseg's FPN neck
    renamed, the backbone's unused classifier norm and head dropped."""
    renamed = {}
    for name, tensor in tensors.items():
        if name.startswith(tuple(f"backbone.{part}" for part in CLASSIFIER_ONLY)):
            continue
        for pattern, replacement in NECK_RENAMES:
            name = pattern.sub(replacement, name)
        renamed[name] = tensor
    return renamed


def load_pretrained(model: nn.Module, weights: StateDict, path: str | os.PathLike) -> None:
    """Put `read_pretrained`'s weights into `model` (see the module's docstring)."""
    if weights.metadata.get("kind") == "segmenter":
        problem = mismatches(model, weights)
        if problem is not None:
            raise TwinsError(
                f"{path}: does not fit {model.arch}: {problem}; build the model the checkpoint "
                "was made for (variant, num_classes, backbone arguments)",
                argument="pretrained",
            )
        load_into_model(model, weights)
        return
    load_imagenet_into_backbone(model.backbone, weights, path, model.arch)
