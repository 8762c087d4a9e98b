"""The detectors' backbone: the Twins dense backbone under torchvision's FeaturePyramidNetwork,
and the RetinaNet P6/P7 levels as the official configs build them.

`TwinsFPN` plays torchvision's `BackboneWithFPN` (`body`, `fpn`, `out_channels`; forward ->
an ordered dict of 256-channel maps), so torchvision's `RetinaNet` and `MaskRCNN` take it as
they take their ResNet backbones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from twins.models.backbone import DenseBackbone


class P6P7OnInput(ExtraFPNBlock):
    """P6 = 3x3 stride-2 conv on the raw last backbone map, P7 = 3x3 stride-2 conv on P6, with
    no ReLU between them: mmdetection 2.8's FPN(add_extra_convs="on_input") with its default
    relu_before_extra_convs=False. (torchvision's LastLevelP6P7 puts a ReLU before P7.)"""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):  # as torchvision initialises its FPN convs
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(
        self, p: list[torch.Tensor], c: list[torch.Tensor], names: list[str]
    ) -> tuple[list[torch.Tensor], list[str]]:
        p6 = self.p6(c[-1])
        p7 = self.p7(p6)
        return [*p, p6, p7], [*names, "p6", "p7"]


class TwinsFPN(nn.Module):
    """Backbone stages `stages` (0-based) into an FPN of `out_channels` maps, plus `extra`."""

    def __init__(
        self,
        body: DenseBackbone,
        stages: Sequence[int],
        extra: ExtraFPNBlock | None,
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        self.body = body
        self.stages = list(stages)
        self.fpn = FeaturePyramidNetwork(
            [body.out_channels[stage] for stage in self.stages], out_channels, extra_blocks=extra
        )
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(images)
        # Keys "0", "1", ...: the names torchvision's RoI poolers look up.
        return self.fpn(OrderedDict((str(i), maps[s]) for i, s in enumerate(self.stages)))
