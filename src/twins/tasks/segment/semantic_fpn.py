"""Semantic FPN (Kirillov et al., 2019) over the Twins backbone, as the official ADE20K models
build it (mmseg 0.12 `FPN` neck + `FPNHead`; dense FACTS §2b, §3d).

The neck is torchvision's `FeaturePyramidNetwork(widths, 256)`, exactly mmseg's FPN without
norm or activation (nearest top-down upsampling, biased convolutions); mmseg's
`neck.lateral_convs.i.conv` / `neck.fpn_convs.i.conv` are its `inner_blocks.i.0` /
`layer_blocks.i.0`. The head turns each level into 128 channels at stride 4 (1, 1, 2, 3
ConvBNReLU 3x3, each but the first level's followed by a 2x bilinear upsampling), sums them,
and classifies (Dropout2d 0.1, 1x1 conv_seg). `neck_channels` and `head_channels` narrow both
for small models (the segmentation demo); the official widths are the defaults.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from twins.tasks.segment.layers import ConvBNReLU, resize
from twins.tasks.segment.segmenter import Segmenter, build_segmenter

NECK_CHANNELS = 256
HEAD_CHANNELS = 128
DEFAULT_WIDTHS = {"neck_channels": NECK_CHANNELS, "head_channels": HEAD_CHANNELS}


class FPNHead(nn.Module):
    """mmseg's FPNHead over four levels at strides 4, 8, 16, 32 (`scale_heads`, `conv_seg`)."""

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = HEAD_CHANNELS, levels: int = 4
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(levels):
            layers: list[nn.Module] = []
            for k in range(max(1, level)):  # stride 4 * 2^level back to stride 4
                layers.append(ConvBNReLU(in_channels if k == 0 else channels, channels, 3))
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.scale_heads[0](features[0])
        for scale_head, feature in zip(self.scale_heads[1:], features[1:], strict=True):
            # Odd sizes: 2x upsampling misses the stride-4 size by a pixel; resized as mmseg does.
            x = x + resize(scale_head(feature), x.shape[-2:])
        return self.conv_seg(self.dropout(x))


def _heads(
    widths: list[int],
    num_classes: int,
    neck_channels: int = NECK_CHANNELS,
    head_channels: int = HEAD_CHANNELS,
) -> dict[str, nn.Module]:
    return {
        "neck": FeaturePyramidNetwork(widths, neck_channels),
        "decode_head": FPNHead(neck_channels, num_classes, head_channels, levels=len(widths)),
    }


def semantic_fpn(
    variant: str,
    num_classes: int = 150,
    pretrained: str | os.PathLike | bool | None = None,
    drop_path_rate: float | None = None,
    fast_path: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    neck_channels: int = NECK_CHANNELS,
    head_channels: int = HEAD_CHANNELS,
    **overrides: Any,
) -> Segmenter:
    """Semantic FPN over the Twins `variant` (any name or alias).

    pretrained: an ImageNet weights file of the variant in any format `twins.load_weights`
        reads, or True for the published ones (the backbone is loaded, the heads are new); or
        a Semantic FPN checkpoint in mmsegmentation's layout (`backbone.`, `neck.`,
        `decode_head.` keys; bare or under `state_dict`) or ours, loaded strictly.
    drop_path_rate: stochastic depth of the backbone (default: the official 0.2, 0.3 for
        SVT-L). neck_channels, head_channels: the widths of the neck and of the head (the
        official 256 and 128 by default). overrides: the backbone's arguments (`embed_dims`,
        `depths`, ...).
    """
    # Recorded in model_args only where they differ from the official widths.
    widths = {"neck_channels": neck_channels, "head_channels": head_channels}
    head_args = {k: v for k, v in widths.items() if v != DEFAULT_WIDTHS[k]}
    return build_segmenter(
        "semantic_fpn",
        variant,
        functools.partial(_heads, **widths),
        num_classes=num_classes,
        pretrained=pretrained,
        drop_path_rate=drop_path_rate,
        fast_path=fast_path,
        device=device,
        dtype=dtype,
        overrides=overrides,
        head_args=head_args,
    )
