"""The device's share of the training transform, as timm's `PrefetchLoader` does it: the uint8
batch to the device, to float, ImageNet normalisation, then random erasing.

The erasing rectangles come with the batch (drawn in the loader with each image,
`twins.tasks.classify.train_transform.ErasingDraw`), so they depend on the image's own seed only; their
noise (`re_mode` "pixel": one normal draw per pixel and channel, "rand": one per channel,
"const": zeros, all in normalised units as timm's `RandomErasing`) comes from a generator on
the device seeded with the image's noise seed, so it too belongs to the image, not to the order
of the batches (on one kind of device: a GPU's generator draws other numbers than the CPU's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

if TYPE_CHECKING:  # the config is only read here; importing it would tie data to train
    from twins.config import TrainConfig


class DeviceBatch:
    """`(images, erasing)` from the training loader -> the normalised, erased float batch."""

    def __init__(
        self,
        mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
        std: tuple[float, ...] = IMAGENET_DEFAULT_STD,
        re_mode: str = "const",
    ) -> None:
        self.mean = torch.tensor([255 * m for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([255 * s for s in std]).view(1, -1, 1, 1)
        self.re_mode = re_mode

    def __call__(self, inputs: tuple[torch.Tensor, torch.Tensor], device: torch.device):
        images, erasing = inputs
        images = images.to(device, non_blocking=True).float()
        images = images.sub_(self.mean.to(device)).div_(self.std.to(device))
        self.erase(images, erasing)
        return images

    def erase(self, images: torch.Tensor, erasing: torch.Tensor) -> None:
        """Erase, in place, the rectangles of each image's table (top, left, height, width,
        noise seed; rows of zero height are unused)."""
        channels = images.shape[1]
        for index, rows in enumerate(erasing.tolist()):
            used = [row for row in rows if row[2] > 0]
            if not used:
                continue
            generator = torch.Generator(device=images.device).manual_seed(used[0][4])
            for top, left, height, width, _ in used:
                region = images[index, :, top : top + height, left : left + width]
                region.copy_(self._noise((channels, height, width), images, generator))

    def _noise(self, shape: tuple[int, int, int], like: torch.Tensor, generator) -> torch.Tensor:
        if self.re_mode == "pixel":
            size = shape
        elif self.re_mode == "rand":
            size = (shape[0], 1, 1)
        else:
            return torch.zeros((shape[0], 1, 1), dtype=like.dtype, device=like.device)
        noise = torch.empty(size, dtype=like.dtype, device=like.device)
        return noise.normal_(generator=generator)


def build_device_batch(config: TrainConfig) -> DeviceBatch:
    """The config's device share of the training transform (`re_mode`)."""
    return DeviceBatch(re_mode=config.re_mode)
