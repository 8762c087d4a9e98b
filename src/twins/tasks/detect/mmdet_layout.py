"""mmdetection 2.x state dicts of the official Twins detectors, renamed to torchvision's
`RetinaNet` / `MaskRCNN` over `TwinsFPN` (dense/FACTS.md §3e-3f).

Class order differs: mmdetection's box classifier has background last and its box regressor and
mask predictor have no background entry, while torchvision puts background first everywhere.
The background rows torchvision adds (4 box deltas, 1 mask channel) are never used for a
prediction; they start at zero.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

Rule = tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]

DROPPED = re.compile(r"^backbone\.(head|norm)\.")  # the classifier's, built and never used


def _background_last_to_first(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t[-1:], t[:-1]])


def _add_background_rows(count: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def add(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.new_zeros((count, *t.shape[1:])), t])

    return add


_BACKBONE_AND_NECK: list[Rule] = [
    (r"^backbone\.", "backbone.body.", None),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0.", None),
]
_FPN_OUTPUTS: Rule = (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0.", None)

RULES: dict[str, list[Rule]] = {
    "retinanet": [
        *_BACKBONE_AND_NECK,
        (r"^neck\.fpn_convs\.3\.conv\.", "backbone.fpn.extra_blocks.p6.", None),
        (r"^neck\.fpn_convs\.4\.conv\.", "backbone.fpn.extra_blocks.p7.", None),
        _FPN_OUTPUTS,
        (r"^bbox_head\.cls_convs\.(\d+)\.conv\.", r"head.classification_head.conv.\1.0.", None),
        (r"^bbox_head\.reg_convs\.(\d+)\.conv\.", r"head.regression_head.conv.\1.0.", None),
        (r"^bbox_head\.retina_cls\.", "head.classification_head.cls_logits.", None),
        (r"^bbox_head\.retina_reg\.", "head.regression_head.bbox_reg.", None),
    ],
    "maskrcnn": [
        *_BACKBONE_AND_NECK,
        _FPN_OUTPUTS,
        (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0.", None),
        (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits.", None),
        (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred.", None),
        (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6.", None),
        (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7.", None),
        (
            r"^roi_head\.bbox_head\.fc_cls\.",
            "roi_heads.box_predictor.cls_score.",
            _background_last_to_first,
        ),
        (
            r"^roi_head\.bbox_head\.fc_reg\.",
            "roi_heads.box_predictor.bbox_pred.",
            _add_background_rows(4),
        ),
        (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.", r"roi_heads.mask_head.\1.0.", None),
        (r"^roi_head\.mask_head\.upsample\.", "roi_heads.mask_predictor.conv5_mask.", None),
        (
            r"^roi_head\.mask_head\.conv_logits\.",
            "roi_heads.mask_predictor.mask_fcn_logits.",
            _add_background_rows(1),
        ),
    ],
}


def is_mmdet_layout(names: set[str] | list[str]) -> bool:
    """Whether the names are an mmdetection detector's (a `backbone.*` trunk beside a `neck.*`)."""
    names = list(names)
    return any(n.startswith("backbone.") for n in names) and any(
        n.startswith("neck.") for n in names
    )


def mmdet_to_torchvision(
    tensors: Mapping[str, torch.Tensor], detector: str
) -> dict[str, torch.Tensor]:
    """torchvision names (and background rows) for an mmdetection state dict of `detector`
    ("retinanet" or "maskrcnn"). Names no rule knows are kept as they are, so a strict load
    reports them as unexpected."""
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if DROPPED.match(name):
            continue
        for pattern, replacement, change in RULES[detector]:
            if re.match(pattern, name):
                name = re.sub(pattern, replacement, name)
                tensor = tensor if change is None else change(tensor)
                break
        renamed[name] = tensor
    return renamed
