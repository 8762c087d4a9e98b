"""UperNet (Xiao et al., 2018) over the Twins backbone, as the official ADE20K models build it
(mmseg 0.12 `UPerHead` + an `FCNHead` on stage 3; dense FACTS §2c, §3c). Module names are
mmseg's, so the released checkpoints load without renaming.

Decode head: a pyramid pooling module (average pooling to 1, 2, 3 and 6 cells, 1x1 ConvBNReLU
to 512, upsampled back and concatenated with the stage-4 map, `bottleneck` 3x3) on stage 4;
1x1 `lateral_convs` on stages 1-3; a top-down pathway (bilinear); 3x3 `fpn_convs`; every level
upsampled to stride 4, concatenated, `fpn_bottleneck` 3x3 to 512, Dropout2d 0.1, `conv_seg`.
Auxiliary head: one 3x3 ConvBNReLU to 256 on stage 3, Dropout2d 0.1, `conv_seg`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from twins.tasks.segment.layers import ConvBNReLU, resize
from twins.tasks.segment.segmenter import AUX_STAGE, Segmenter, build_segmenter

POOL_SCALES = (1, 2, 3, 6)
CHANNELS = 512
AUX_CHANNELS = 256


class UperHead(nn.Module):
    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = CHANNELS,
        pool_scales: tuple[int, ...] = POOL_SCALES,
    ) -> None:
        super().__init__()
        # Each pooling branch: index 0 the pooling, 1 the conv (mmseg's `psp_modules.i.1`).
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(in_channels[-1], channels, 1))
            for scale in pool_scales
        )
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(
            ConvBNReLU(width, channels, 1) for width in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize(branch(x), x.shape[-2:]) for branch in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)]
        laterals.append(self.pyramid_pooling(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        fused = torch.cat([outs[0], *(resize(out, size) for out in outs[1:])], dim=1)
        return self.conv_seg(self.dropout(self.fpn_bottleneck(fused)))


class FCNHead(nn.Module):
    """mmseg's FCNHead with one 3x3 convolution and no input concatenation."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = AUX_CHANNELS) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(in_channels, channels, 3))
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


def _heads(widths: list[int], num_classes: int) -> dict[str, nn.Module]:
    return {
        "decode_head": UperHead(widths, num_classes),
        "auxiliary_head": FCNHead(widths[AUX_STAGE], num_classes),
    }


def upernet(
    variant: str,
    num_classes: int = 150,
    pretrained: str | os.PathLike | bool | None = None,
    drop_path_rate: float | None = None,
    fast_path: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> Segmenter:
    """UperNet with its auxiliary FCN head over the Twins `variant` (any name or alias).

    pretrained: an ImageNet weights file of the variant in any format `twins.load_weights`
        reads, or True for the published ones (the backbone is loaded, the heads are new); or
        an UperNet checkpoint in mmsegmentation's layout (the released ADE20K models:
        `backbone.`, `decode_head.`, `auxiliary_head.` keys, bare or under `state_dict`) or
        ours, loaded strictly.
    drop_path_rate: stochastic depth of the backbone (default: the official 0.2, 0.3 for
        SVT-L). overrides: the backbone's arguments (`embed_dims`, `depths`, ...).
    """
    return build_segmenter(
        "upernet",
        variant,
        _heads,
        num_classes=num_classes,
        pretrained=pretrained,
        drop_path_rate=drop_path_rate,
        fast_path=fast_path,
        device=device,
        dtype=dtype,
        overrides=overrides,
    )
