"""The training transform on uint8 tensors: the recipe of timm's `create_transform` with the
output contract of timm's prefetcher (uint8 images; normalisation and random erasing on the
device, `twins.tasks.classify.device_batch`).

Per image, in timm's order and with timm's random draws (so one seed gives the crop, flip, ops,
magnitudes and erasing rectangles timm's PIL transform gives):
1. random resized crop: timm's `RandomResizedCropAndInterpolation.get_params` (`crop_scale`,
   ratio 3/4-4/3), then only the crop is resized, antialiased (`interpolation`; "random" draws
   bilinear or bicubic as timm does), on uint8 (torchvision's resize: Pillow's filters);
2. horizontal flip with probability `hflip` (`torch.rand(1) < p`, torchvision's draw);
3. `auto_augment`: timm's own RandAugment / AutoAugment / AugMix object, whose ops run on the
   tensor (`twins.tasks.classify.augment_ops`);
4. random erasing (`re_prob`, `re_mode`, `re_count`): the rectangles (timm's `RandomErasing`
   draws) and a seed for their noise are drawn here, with the image, and applied on the device.

The image comes in as an RGB PIL image (`twins.data.images.decode_rgb`: only the crop's pixels
are copied out of Pillow) or a uint8 tensor (3 x H x W). Out comes `(image, erasing)`: the 3 x size x size uint8 image and an int64
`re_count` x 5 table of rectangles (top, left, height, width, noise seed), unused rows zero.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN
from timm.data.auto_augment import (
    AugMixAugment,
    augment_and_mix_transform,
    auto_augment_transform,
    rand_augment_transform,
)
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from twins.tasks.classify.augment_ops import planar, tensor_op
from twins.tasks.classify.transforms import posterize

if TYPE_CHECKING:  # the config is only read here; importing it would tie data to train
    from twins.config import TrainConfig

ERASING_FIELDS = 5  # top, left, height, width, noise seed

_RANDOM_INTERPOLATION = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST_EXACT,  # Pillow's nearest: the pixel under the centre
}


def timm_augment(text: str, image_size: int, interpolation: str) -> Any:
    """timm's auto-augment object for `text` with the parameters timm's `create_transform`
    gives it (ImageNet-mean fill, translations of 45% of the image, the interpolation)."""
    params: dict[str, Any] = {
        "translate_const": int(image_size * 0.45),
        "img_mean": tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN),
    }
    if interpolation and interpolation != "random":
        params["interpolation"] = str_to_pil_interp(interpolation)
    if text.startswith("rand"):
        return rand_augment_transform(text, params)
    if text.startswith("augmix"):
        params["translate_pct"] = 0.3
        return augment_and_mix_transform(text, params)
    return auto_augment_transform(text, params)


class _PilAugment:
    """A timm transform that only takes PIL images (AugMix), run on a tensor."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out = np.asarray(self.transform(pil))
        return torch.from_numpy(out.copy()).permute(2, 0, 1).contiguous()


def tensor_augment(text: str, image_size: int, interpolation: str) -> Any:
    """timm's augment object for `text`, its ops swapped for their tensor versions (AugMix,
    which mixes PIL images itself, runs on PIL)."""
    augment = timm_augment(text, image_size, interpolation)
    ops = list(getattr(augment, "ops", ()))
    for sub_policy in getattr(augment, "policy", ()):
        ops.extend(sub_policy)
    if isinstance(augment, AugMixAugment):
        for op in ops:
            if op.name.startswith("Posterize"):
                op.aug_fn = posterize  # also for 0 bits kept, which Pillow refuses
        return _PilAugment(augment)
    for op in ops:
        op.aug_fn = tensor_op(op.name, op.aug_fn)
    return augment


class ErasingDraw:
    """The rectangles timm's `RandomErasing` erases in an image (its draws, in its order), as
    a table for the device (`twins.tasks.classify.device_batch`); a noise seed follows the rectangles."""

    def __init__(self, probability: float, mode: str, max_count: int) -> None:
        self.reference = RandomErasing(probability, mode=mode, max_count=max_count, device="cpu")
        self.max_count = max_count

    def __call__(self, height: int, width: int) -> torch.Tensor:
        table = torch.zeros(self.max_count, ERASING_FIELDS, dtype=torch.int64)
        ref = self.reference
        if random.random() > ref.probability:
            return table
        area = height * width
        count = (
            ref.min_count
            if ref.min_count == ref.max_count
            else random.randint(ref.min_count, ref.max_count)
        )
        rows = []
        for _ in range(count):
            for _attempt in range(10):
                target_area = random.uniform(ref.min_area, ref.max_area) * area / count
                aspect_ratio = math.exp(random.uniform(*ref.log_aspect_ratio))
                h = int(round(math.sqrt(target_area * aspect_ratio)))
                w = int(round(math.sqrt(target_area / aspect_ratio)))
                if w < width and h < height:
                    top = random.randint(0, height - h)
                    left = random.randint(0, width - w)
                    rows.append((top, left, h, w))
                    break
        if rows:
            seed = random.getrandbits(62)
            table[: len(rows)] = torch.tensor([(*row, seed) for row in rows])
        return table


class TrainTransform:
    """Random resized crop, flip, auto-augment on uint8 tensors; random erasing drawn."""

    def __init__(
        self,
        image_size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip: float = 0.5,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        re_mode: str = "const",
        re_count: int = 1,
    ) -> None:
        self.size = (image_size, image_size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        self.hflip = hflip
        self.augment = (
            tensor_augment(auto_augment, image_size, interpolation) if auto_augment else None
        )
        self.erasing = ErasingDraw(re_prob, re_mode, re_count)

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        top, left, height, width = RandomResizedCropAndInterpolation.get_params(
            image, self.scale, self.ratio
        )
        if self.interpolation == "random":
            mode = random.choice(_RANDOM_INTERPOLATION)
        else:
            mode = _INTERPOLATION[self.interpolation]
        # timm's draw rounds a tiny image's crop to 0 rows or columns (Pillow then refuses to
        # resize it): keep at least one, inside the image.
        height, width = max(1, height), max(1, width)
        image_height, image_width = F.get_size(image)
        top, left = min(top, image_height - height), min(left, image_width - width)
        crop = _packed_crop(image, top, left, height, width)
        # The resize keeps the packed layout; the ops take planes.
        out = planar(F.resize(crop, list(self.size), interpolation=mode, antialias=True))
        if self.hflip > 0 and torch.rand(1) < self.hflip:
            out = out.flip(-1)
        if self.augment is not None:
            out = self.augment(out)
        return planar(out), self.erasing(*self.size)


def _packed_crop(image: Any, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The crop as a 3 x height x width view of packed pixels (each row's R, G, B side by
    side): the resize runs a third faster on them than on planes or a strided view."""
    if isinstance(image, Image.Image):
        # Only the crop's pixels leave Pillow (a decoded image is the whole file's).
        pixels = np.array(image.crop((left, top, left + width, top + height)))
        return torch.from_numpy(pixels).permute(2, 0, 1)
    crop = image[:, top : top + height, left : left + width]
    return crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def build_train_transform(config: TrainConfig) -> TrainTransform:
    """The config's training transform (`crop_scale`, `interpolation`, `hflip`, `auto_augment`,
    `re_prob`, `re_mode`, `re_count`, `image_size`)."""
    return TrainTransform(
        int(config.image_size),
        scale=tuple(config.crop_scale),
        interpolation=config.interpolation,
        hflip=float(config.hflip),
        auto_augment=config.auto_augment or None,
        re_prob=float(config.re_prob),
        re_mode=config.re_mode,
        re_count=int(config.re_count),
    )
