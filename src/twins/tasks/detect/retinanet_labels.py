"""torchvision's RetinaNet with labels counted from 1, as its two-stage detectors count them.

torchvision's RetinaNet takes a label as the index of its sigmoid output, so COCO-style labels
1..K would need a (never positive) background output 0. mmdetection's RetinaNet has exactly K
outputs; this one keeps those K (and so the official parameter count and weights) and shifts
the labels instead: targets 1..K train outputs 0..K-1, and detections come back as 1..K, the
same numbering as the Twins Mask R-CNN gives.
"""

from __future__ import annotations

import torch
from torchvision.models.detection import RetinaNet

from twins.errors import TwinsError


class RetinaNetFromOne(RetinaNet):
    def compute_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        head_outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        shifted = []
        for target in targets:
            labels = target["labels"]
            if labels.numel() and int(labels.min()) < 1:
                raise TwinsError(
                    "detection labels count from 1 (0 is the background, never a target): "
                    "give object class i as label i + 1"
                )
            shifted.append({**target, "labels": labels - 1})
        return super().compute_loss(shifted, head_outputs, anchors)

    def postprocess_detections(
        self,
        head_outputs: dict[str, list[torch.Tensor]],
        anchors: list[list[torch.Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        detections = super().postprocess_detections(head_outputs, anchors, image_shapes)
        return [{**found, "labels": found["labels"] + 1} for found in detections]
