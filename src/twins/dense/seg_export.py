"""What `twins export` needs of a segmenter: its graph's one output is the `"out"` logits
(N x K x H x W at the input size), without the auxiliary head's, which only training uses.

`SegmentationLogits` wraps the segmenter so that the classifier's exporters (`twins.export`)
trace, check and describe it as they do a classifier; the metadata it carries is the
segmenter's (arch, model_args, classes, task "segment") and the checkpoint's "dataset"
(palette, label reduction).
"""

from __future__ import annotations

import torch
from torch import nn

from twins.dense.registry import split_dense_name
from twins.models import smallest_image_size

OUTPUT_NAME = "out"


class SegmentationLogits(nn.Module):
    """A segmenter whose forward gives the `"out"` logits alone (a tensor, not a dict)."""

    output_name = OUTPUT_NAME

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter
        # What twins.weights.model_metadata reads of a model.
        self.arch, self.model_args = segmenter.arch, segmenter.model_args
        self.num_classes, self.task = segmenter.num_classes, segmenter.task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x)["out"]


def smallest_dense_side(arch: str, model_args: dict) -> int | None:
    """The smallest input side of an exported dense model, or None for a classifier: twice the
    backbone's, since torch.export cannot trace the heads for a last-stage map one token
    across (it guards the width against it); segmentation images are far larger anyway."""
    dense = split_dense_name(arch)
    return None if dense is None else 2 * smallest_image_size(dense[1], model_args)
