"""The small building blocks of the segmentation heads, named as mmcv names them so that the
official checkpoints' keys are these modules' own (`...conv.weight`, `...bn.running_mean`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Module):
    """mmcv's `ConvModule` with BatchNorm and ReLU: a convolution without bias (the norm has
    one), BatchNorm, ReLU. Initialised as mmcv initialises it (Kaiming normal, fan out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def conv_seg(channels: int, num_classes: int) -> nn.Conv2d:
    """The 1x1 convolution to the classes that ends every mmseg decode head (after its
    Dropout2d), initialised normal(0, 0.01) as mmseg does."""
    conv = nn.Conv2d(channels, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with align_corners=False, as every official head resizes."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
