"""A dense model's head: the builder of `<head>_<variant>` models (`upernet_svt_small`,
`retinanet_twins_pcpvt_small`, ...; any variant alias after the head) and the official data
set's class count. Each dense task lists its heads (`tasks/<task>/heads.py`); importing this
module imports no torch, so `--help` and the model names stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from twins.errors import TwinsError

if TYPE_CHECKING:
    from torch import nn


class Head(NamedTuple):
    builder: str  # "module:function", called as builder(variant, num_classes=..., **kwargs)
    default_classes: int  # the official data set's (ADE20K 150, COCO 80)


def split_head_name(name: str, heads: Mapping[str, Head]) -> tuple[str, str] | None:
    """(head, canonical variant) of `name` among `heads`, or None where no head starts it. A
    known head with an unknown variant is the variant registry's error."""
    from twins.models.registry import resolve_name  # here: the model zoo pulls torch

    key = name.strip().lower()
    for head in sorted(heads, key=len, reverse=True):
        if key.startswith(head + "_"):
            return head, resolve_name(key[len(head) + 1 :])
    return None


def builder_of(heads: Mapping[str, Head], head: str) -> Callable[..., nn.Module]:
    module, function = heads[head].builder.split(":")
    return getattr(importlib.import_module(module), function)


def create_head_model(
    heads: Mapping[str, Head], name: str, num_classes: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build the dense model `name`; `num_classes` defaults to the official data set's. Build
    options left at None (`fast_path`, `device`, `dtype`, `pretrained`) are the builder's own."""
    split = split_head_name(name, heads)
    if split is None:
        names = ", ".join(f"{head}_<variant>" for head in heads)
        raise TwinsError(f"{name!r} is none of {names}", argument="arch")
    head, variant = split
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    if not kwargs.get("pretrained", True):
        del kwargs["pretrained"]
    classes = heads[head].default_classes if num_classes is None else num_classes
    return builder_of(heads, head)(variant, num_classes=classes, **kwargs)


def head_model_from_weights(
    heads: Mapping[str, Head],
    weights: Mapping[str, Any],
    name: str,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A dense model from its weights: the file's recorded `model_args` (classes, backbone
    shape) where it holds the same head and variant, checked on the meta device, then built
    and loaded strictly, in eval mode, with what the file says of its data as its
    `pretrained_cfg` (`dense_pretrained_cfg`)."""
    from twins.weights import load_into_model, mismatches

    metadata = getattr(weights, "metadata", {})
    recorded_name = metadata.get("arch")
    described = isinstance(recorded_name, str) and _split_or_none(recorded_name, heads)
    recorded = metadata.get("model_args") if described == split_head_name(name, heads) else None
    kwargs = {**(recorded if isinstance(recorded, Mapping) else {}), **(model_args or {})}
    skeleton = create_head_model(heads, name, device="meta", **kwargs)
    problem = mismatches(skeleton, weights)
    if problem is not None:
        raise TwinsError(
            f"the weights do not fit {name}: {problem}; build the model the file was made for "
            "(arch, model_args)",
            argument="model_args" if model_args else "arch",
        )
    model = create_head_model(heads, name, **kwargs)
    load_into_model(model, weights)
    model.pretrained_cfg = model.default_cfg = dense_pretrained_cfg(model, metadata)
    return model.eval()


def dense_pretrained_cfg(model: nn.Module, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a dense model's file says of the data it was made for, as a classifier's
    `pretrained_cfg` says it (timm's names where timm has one): `architecture`, `num_classes`,
    `label_names` (the class names, label order), and each key of the file's `preprocessing`
    (`img_scale`, `mean`, `std`; a detector's `min_size`, `max_size`, `pad_divisor`) and
    `dataset` (a segmenter's `palette`, `reduce_zero_label`, `ignore_index`; a detector's
    `category_ids`, `category_names`: its label i + 1 is category `category_ids[i]`). A key
    the file does not hold is absent."""
    cfg: dict[str, Any] = {"architecture": model.arch, "num_classes": model.num_classes}
    names = metadata.get("class_names")
    if isinstance(names, list) and len(names) == model.num_classes:
        cfg["label_names"] = tuple(names)
    for part in ("preprocessing", "dataset"):
        described = metadata.get(part)
        if isinstance(described, Mapping):
            cfg |= {key: value for key, value in described.items() if value is not None}
    for key in ("mean", "std"):  # timm's are tuples
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    return cfg


def _split_or_none(name: str, heads: Mapping[str, Head]) -> tuple[str, str] | None:
    try:
        return split_head_name(name, heads)
    except TwinsError:  # a variant this toolkit does not know
        return None


def named_model_from_weights(
    heads: Mapping[str, Head],
    weights: Any,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """`head_model_from_weights` of the model `arch` names, else the one the file names."""
    named = arch or getattr(weights, "metadata", {}).get("arch")
    if not isinstance(named, str) or not named:
        names = ", ".join(f"{head}_<variant>" for head in heads)
        raise TwinsError(
            f"the weights do not say which model they hold; pass arch (one of {names})",
            argument="arch",
        )
    if split_head_name(named, heads) is None:
        names = ", ".join(f"{head}_<variant>" for head in heads)
        raise TwinsError(f"{named} is none of {names}", argument="arch")
    return head_model_from_weights(heads, weights, named, model_args)
