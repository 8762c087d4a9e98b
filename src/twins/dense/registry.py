"""Dense model names: `<head>_<variant>` (`upernet_svt_small`, `maskrcnn_pcpvt_base`, ...), any
variant alias accepted after the head (`upernet_alt_gvt_small`, `retinanet_twins_svt_small`).

Each head names the task it serves and the function that builds it, imported when used, as
`builder(variant, num_classes=..., **kwargs) -> nn.Module`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from twins.errors import TwinsError
from twins.models.registry import VARIANTS, resolve_name


class DenseHead(NamedTuple):
    task: str  # "segment" or "detect"
    builder: str  # "module:function"
    default_classes: int  # the official data set's (ADE20K 150, COCO 80)


HEADS: dict[str, DenseHead] = {
    "semantic_fpn": DenseHead("segment", "twins.dense.semantic_fpn:semantic_fpn", 150),
    "upernet": DenseHead("segment", "twins.dense.upernet:upernet", 150),
    "retinanet": DenseHead("detect", "twins.dense.detectors:retinanet", 80),
    "maskrcnn": DenseHead("detect", "twins.dense.detectors:maskrcnn", 80),
}


def split_dense_name(name: str) -> tuple[str, str] | None:
    """(head, canonical variant) of a dense model name, or None if `name` names no dense head.
    A known head with an unknown variant is an error naming the variants."""
    key = name.strip().lower()
    for head in sorted(HEADS, key=len, reverse=True):
        if key.startswith(head + "_"):
            return head, resolve_name(key[len(head) + 1 :])
    return None


def dense_model_names(task: str | None = None) -> list[str]:
    """Every dense model's canonical name (of one task: "segment" or "detect")."""
    return [
        f"{head}_{variant}"
        for head, spec in HEADS.items()
        if task is None or spec.task == task
        for variant in VARIANTS
    ]


def task_of(name: str) -> str:
    """ "classify", "segment" or "detect" for any model name or alias."""
    split = split_dense_name(name)
    if split is None:
        resolve_name(name)  # unknown names: the registry's error
        return "classify"
    return HEADS[split[0]].task


def builder_of(head: str) -> Callable[..., nn.Module]:
    module, function = HEADS[head].builder.split(":")
    return getattr(importlib.import_module(module), function)


def create_dense_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the dense model `name`; `num_classes` defaults to the official data set's."""
    split = split_dense_name(name)
    if split is None:
        raise TwinsError(f"{name!r} is not a dense model: choose one of {dense_model_names()}")
    head, variant = split
    classes = HEADS[head].default_classes if num_classes is None else num_classes
    return builder_of(head)(variant, num_classes=classes, **kwargs)
