"""ImageNet weights (any file `twins.load_weights` reads) into the dense backbone, as the
official dense code initialises it: the classifier's head and final norm are not part of the
dense model, and SVT's per-stage norms (`norm_list`) are new, so they keep their fresh values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from twins.errors import TwinsError
from twins.models.backbone import DenseBackbone
from twins.models.registry import RECORDED_SHAPE, recorded_shape, resolve_name
from twins.notes import note
from twins.weights import StateDict, load_into_model, load_weights, mismatches

CLASSIFIER_ONLY = ("head.", "norm.")  # the classifier's head and final norm


def read_imagenet_weights(path: str | os.PathLike, variant: str) -> StateDict:
    """The classifier weights of `path` (`arch` tells PCPVT from SVT where a file cannot)."""
    return load_weights(path, arch=resolve_name(variant))


def recorded_backbone_shape(weights: StateDict, variant: str) -> dict[str, Any]:
    """The shape arguments (widths, depths, ...) the file records for `variant`, if any."""
    shape = recorded_shape(resolve_name(variant), weights.metadata, RECORDED_SHAPE)
    act_layer = weights.metadata.get("act_layer")
    return {**shape, "act_layer": act_layer} if act_layer else shape


def load_imagenet_into_backbone(
    backbone: DenseBackbone,
    weights: Mapping[str, torch.Tensor],
    source: str | os.PathLike = "the weights",
    model: str = "the dense model",
) -> None:
    """Strict load of an ImageNet classifier's stage weights (`source`) into the backbone of
    `model`, checked first, with one note saying what was left out and what starts fresh."""
    tensors = {name: t for name, t in weights.items() if not name.startswith(CLASSIFIER_ONLY)}
    dropped = sorted({name.split(".")[0] for name in weights if name.startswith(CLASSIFIER_ONLY)})
    own = backbone.state_dict()
    fresh = [name for name in own if name.startswith("norm_list.") and name not in tensors]
    tensors.update({name: own[name] for name in fresh})
    problem = mismatches(backbone, tensors)
    if problem is not None:
        raise TwinsError(
            f"{source}: its backbone does not fit {model}: {problem}; pass the backbone "
            "arguments (embed_dims, depths, ...) the classifier was built with",
            argument="pretrained",
        )
    load_into_model(backbone, tensors)
    said = []
    if dropped:
        parts = " and ".join("final norm" if part == "norm" else part for part in dropped)
        said.append(f"its {parts} dropped (unused by dense models)")
    if fresh:
        said.append("the per-stage norms (norm_list) start fresh, as the official code's do")
    said.append("the heads start from their initialisation")
    note(
        f"pretrained: {source} is an ImageNet classifier, loaded into the backbone of {model}; "
        + "; ".join(said)
    )
