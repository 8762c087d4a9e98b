"""The small building blocks of the segmentation heads, named as mmcv names them so that the
official checkpoints' keys are these modules' own (`...conv.weight`, `...bn.running_mean`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv's `ConvModule` with BatchNorm and ReLU: a convolution without bias (the norm has
    one), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def init_head(head: nn.Module) -> None:
    """mmseg's initialisation of a neck or head: ConvModules Kaiming normal (fan out), the
    classifier `conv_seg` normal(0, 0.01), biased convolutions (the FPN neck's) Xavier uniform;
    biases zero, BatchNorms weight 1. Run after construction, outside any device context (on
    the meta device it is then free)."""
    for name, module in head.named_modules():
        if isinstance(module, ConvBNReLU):
            nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Conv2d) and name.endswith("conv_seg"):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with align_corners=False, as every official head resizes."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
