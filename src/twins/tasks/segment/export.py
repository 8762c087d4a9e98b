"""What `twins export` needs of a segmenter: its graph's one output is the `"out"` logits
(N x K x H x W at the input size), without the auxiliary head's, which only training uses.

`SegmentationLogits` is the segmenter with that one output, so that the classifier's exporters
(`twins.export.engine`) trace, check and describe it as they do a classifier; the metadata it
carries is the segmenter's (arch, model_args, classes, task "segment") and the checkpoint's
"dataset" (palette, label reduction). Its parameters keep the segmenter's names (it is a
`Segmenter` of the same modules, not a wrapper around one), so `twins.load_model` rebuilds the
segmenter from a `.pt2` program's weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from twins.export.engine import ExportResult
from twins.export.formats import export_as
from twins.models import smallest_image_size
from twins.tasks.head import split_head_name
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.segmenter import Segmenter

OUTPUT_NAME = "out"


class SegmentationLogits(Segmenter):
    """A copy of a segmenter whose forward gives the `"out"` logits alone (a tensor, not a
    dict), its adaptive average poolings (UperNet's pyramid pooling) made traceable at any
    size."""

    output_name = OUTPUT_NAME

    def __init__(self, segmenter: Segmenter) -> None:
        own = copy.deepcopy(segmenter)
        for parent in list(own.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.AdaptiveAvgPool2d):
                    setattr(parent, name, AdaptiveAvgPoolAnySize(child.output_size))
        super().__init__(
            own.backbone,
            own.decode_head,
            getattr(own, "neck", None),
            getattr(own, "auxiliary_head", None),
            arch=own.arch,
            model_args=own.model_args,
        )
        self.smallest_export_side = smallest_dense_side(self.arch, self.model_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)["out"]


class AdaptiveAvgPoolAnySize(nn.Module):
    """`nn.AdaptiveAvgPool2d(output_size)` as two averaging matrices made from the input's size,
    with torch's bins (bin i of s over a side of n: from floor(i n / s) to ceil((i + 1) n / s)).
    torch's ONNX lowering of adaptive pooling indexes the bins of the size traced at, which
    fails at other sizes; this form follows the size."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.rows, self.cols = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _bins(x.shape[-2], self.rows, x)  # rows x H
        cols = _bins(x.shape[-1], self.cols, x)  # cols x W
        return rows @ x @ cols.transpose(0, 1)


def _bins(length: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """size x length: row i averages bin i of the side."""
    index = torch.arange(size, device=like.device)[:, None]
    position = torch.arange(length, device=like.device)[None, :]
    start, end = index * length // size, ((index + 1) * length + size - 1) // size
    inside = ((position >= start) & (position < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def smallest_dense_side(arch: str, model_args: dict) -> int:
    """The smallest input side of an exported segmenter: twice the backbone's, since
    torch.export cannot trace the heads for a last-stage map one token across (it guards the
    width against it); segmentation images are far larger anyway."""
    _, variant = split_head_name(arch, HEADS)
    return 2 * smallest_image_size(variant, model_args)


def export_segmenter(
    model: nn.Module, format: str, output: str | os.PathLike, metadata: Mapping[str, Any], **options
) -> ExportResult:
    """The segmenter's weights, or its "out" logits as a graph (`SegmentationLogits`);
    `options` as `twins.export.formats.export_as` takes them."""
    if format not in ("safetensors", "hf"):  # weights only: the segmenter's own
        model = SegmentationLogits(model)  # the graph gives the "out" logits
    return export_as(model, format, output, metadata, **options)
