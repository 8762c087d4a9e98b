"""A segmentation model: the dense backbone, an optional neck, a decode head and an optional
auxiliary head, with the forward of torchvision's segmentation models; and the builder the
Semantic FPN and UperNet functions share.

`forward(images)` -> {"out": N x K x H x W logits at the input size, "aux": the same from the
auxiliary head (UperNet)}. As in torchvision, "aux" is returned in training and in evaluation
alike; the training loss weighs it (0.4 in the official recipes), evaluation ignores it.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from twins.errors import TwinsError
from twins.models.backbone import DenseBackbone, dense_backbone
from twins.models.pretrained import pretrained_file
from twins.models.registry import OVERRIDES, RECORDED_SHAPE, recorded_shape, resolve_name
from twins.tasks.segment.layers import init_head, resize

# Backbone arguments a segmenter builder takes (the classifier's, less its pooling), and
# `stage_norms` (the SVT per-stage LayerNorms, default on for SVT).
BACKBONE_OVERRIDES = tuple(name for name in OVERRIDES if name != "global_pool") + ("stage_norms",)
# Stochastic depth the official segmentation code hard-codes in its backbone classes.
SEGMENTATION_DROP_PATH = {"svt_large": 0.3}
DEFAULT_DROP_PATH = 0.2
# The backbone stage the auxiliary head reads (mmseg in_index 2: stride 16).
AUX_STAGE = 2


class Segmenter(nn.Module):
    def __init__(
        self,
        backbone: DenseBackbone,
        decode_head: nn.Module,
        neck: nn.Module | None = None,
        auxiliary_head: nn.Module | None = None,
        *,
        arch: str,
        model_args: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if neck is not None:
            self.neck = neck
        self.decode_head = decode_head
        if auxiliary_head is not None:
            self.auxiliary_head = auxiliary_head
        # What rebuilds this model: `twins.create_model(arch, **model_args)`.
        self.arch = arch
        self.task = "segment"
        self.model_args = model_args
        self.num_classes = int(model_args["num_classes"])
        self.in_chans = backbone.in_chans

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = images.shape[-2:]
        maps = self.backbone(images)
        features = maps
        if hasattr(self, "neck"):  # torchvision's FPN takes and gives an ordered dict
            named = self.neck(OrderedDict((str(i), m) for i, m in enumerate(maps)))
            features = list(named.values())
        result = {"out": resize(self.decode_head(features), size)}
        if hasattr(self, "auxiliary_head"):
            result["aux"] = resize(self.auxiliary_head(maps[AUX_STAGE]), size)
        return result


def build_segmenter(
    head: str,
    variant: str,
    make_heads: Callable[[list[int], int], dict[str, nn.Module]],
    *,
    num_classes: int,
    pretrained: str | os.PathLike | bool | None,
    drop_path_rate: float | None,
    fast_path: bool | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    overrides: dict[str, Any],
    head_args: dict[str, Any] | None = None,
) -> Segmenter:
    """Backbone of `variant` (with `overrides`), heads from `make_heads(widths, num_classes)`
    (a dict of `neck`, `decode_head`, `auxiliary_head`; `head_args`, the arguments that shaped
    them, go into `model_args`), weights from `pretrained`."""
    variant = resolve_name(variant)
    arch = f"{head}_{variant}"
    unknown = sorted(set(overrides) - set(BACKBONE_OVERRIDES))
    if unknown:
        raise TwinsError(
            f"unknown argument(s) {', '.join(unknown)} for {arch}: valid ones are num_classes, "
            f"pretrained, drop_path_rate, fast_path, device, dtype and the backbone's "
            f"{', '.join(BACKBONE_OVERRIDES)}",
            argument=unknown[0],
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TwinsError(f"num_classes must be a positive integer, not {num_classes!r}")
    if drop_path_rate is None:
        drop_path_rate = SEGMENTATION_DROP_PATH.get(variant, DEFAULT_DROP_PATH)
    weights = None
    if pretrained:
        from twins.tasks.segment.checkpoint import read_pretrained

        pretrained = pretrained_file(pretrained, variant, device)
        weights = read_pretrained(pretrained, variant)
        if isinstance(weights.metadata.get("arch"), str):  # a file naming no model: no shape
            keys = (*RECORDED_SHAPE, "stage_norms")
            overrides = {**recorded_shape(variant, weights.metadata, keys, (arch,)), **overrides}
    model_args = {"num_classes": num_classes, "drop_path_rate": drop_path_rate, **overrides}
    model_args |= head_args or {}
    try:
        backbone = dense_backbone(
            variant,
            drop_path_rate=drop_path_rate,
            fast_path=fast_path,
            device=device,
            dtype=dtype,
            **overrides,
        )
    except TwinsError as error:
        raise TwinsError(f"cannot build {arch}: {error}", argument=error.argument) from error
    with torch.device(device) if device is not None else contextlib.nullcontext():
        heads = make_heads(list(backbone.out_channels), num_classes)
    for module in heads.values():
        init_head(module)
    model = Segmenter(backbone, **heads, arch=arch, model_args=model_args)
    if dtype is not None:
        model.to(dtype)
    if weights is not None:
        from twins.tasks.segment.checkpoint import load_pretrained

        load_pretrained(model, weights, pretrained)
    return model
