"""The segmentation training loss as mmsegmentation 0.12 computes it.

Each head's logits are resized to the label's size (bilinear, align_corners False), then the
per-pixel cross-entropy is taken with the ignore index 255 and averaged over ALL pixels, the
ignored ones counting 0 (mmseg 0.12's `CrossEntropyLoss` with `reduction="mean"`; its
`avg_non_ignore` option, default off, came in 0.23). `F.cross_entropy(..., ignore_index=255)`
averages over the labelled pixels only, a larger loss wherever pixels are ignored, so the
official runs' loss scale (and with it the effect of the learning rate) would not be kept.
The auxiliary head's loss is weighted (0.4 in the official recipes) and added; the parts are
named as the official logs name them (`decode.loss_seg`, `aux.loss_seg`, weighted).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def resize_to_label(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """`logits` (N x K x h x w) resized bilinearly to the label's H x W."""
    size = tuple(label.shape[-2:])
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def pixel_cross_entropy(
    logits: torch.Tensor,
    label: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    over_labelled: bool = False,
) -> torch.Tensor:
    """Cross-entropy of N x K x h x w logits against an N x H x W label, averaged over all
    N x H x W pixels (ignored pixels count as 0), or with `over_labelled` over the labelled
    pixels only (`F.cross_entropy`'s mean; mmseg's later `avg_non_ignore`)."""
    logits = resize_to_label(logits, label)
    if over_labelled:
        return F.cross_entropy(logits, label.long(), ignore_index=ignore_index)
    losses = F.cross_entropy(logits, label.long(), ignore_index=ignore_index, reduction="none")
    return losses.mean()


def segmentation_loss(
    outputs: Mapping[str, torch.Tensor],
    label: torch.Tensor,
    aux_weight: float = 0.4,
    ignore_index: int = IGNORE_INDEX,
    over_labelled: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, parts) for a segmenter's outputs ("out", and "aux" where it has one);
    `over_labelled`: each head's loss averaged over the labelled pixels only."""
    parts = {
        "decode.loss_seg": pixel_cross_entropy(outputs["out"], label, ignore_index, over_labelled)
    }
    if outputs.get("aux") is not None:
        parts["aux.loss_seg"] = aux_weight * pixel_cross_entropy(
            outputs["aux"], label, ignore_index, over_labelled
        )
    return sum(parts.values()), parts


def pixel_accuracy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """% of all pixels whose argmax class is right: the logs' `acc_seg`. mmseg 0.12's
    `accuracy` divides by every pixel, ignored ones included (they are never right)."""
    right = resize_to_label(logits, label).argmax(dim=1) == label
    return right.sum() * 100.0 / label.numel()
