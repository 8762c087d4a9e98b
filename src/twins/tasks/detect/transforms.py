"""The detection pipelines of the official recipes, on transforms.v2 and tv_tensors (the boxes
and masks follow the image through every step; no box arithmetic here).

Where each step of mmdetection's pipeline happens:
- in the data pipeline (here, per image, on uint8, with the image's own random draws): the
  keep-ratio resize, the crop of the 3x recipe and the horizontal flip. Resizing uint8 before
  normalising is what mmdetection does, and the multi-scale and crop draws belong to the image
  (seeded from (seed, epoch, index), `twins.train.sample_seeds`), so a resumed run draws them
  again exactly;
- in the model (torchvision's GeneralizedRCNNTransform): scaling to 0..1 and normalising with
  the ImageNet mean and std, and padding the batch to a multiple of 32. Its resize must do
  nothing (the image arrives at its final size: a GeneralizedRCNNTransform whose `resize`
  returns its inputs); the detector's evaluation output is then in
  the coordinates of the resized image, which `twins.tasks.detect.metrics` maps back to the
  original pixels. So each image is resized once, here.

Pipelines (the official `coco_detection.py` / `coco_instance.py` and the 3x configs):
- `train_transform_1x`: resize keep-ratio into (1333, 800) (short side 800 unless the long side
  would pass 1333), flip with probability 0.5;
- `train_transform_3x`: one of two policies with equal chance (DETR's, as the 3x configs'
  AutoAugment): (a) short side drawn from 480, 512, ..., 800, long side at most 1333; (b) short
  side drawn from {400, 500, 600} (long side at most 1333), a crop of height and width drawn
  from 384..600 (capped at the image) at a random place, boxes cut to the crop and those left
  under a pixel dropped with their labels and masks (an image may keep no box, mmdetection's
  `allow_negative_crop`), then (a); flip 0.5 after either (the configs flip first: the same
  distribution, on a smaller image);
- `eval_transform`: the 1x resize, nothing random.

Every random draw comes from torch's global generator, which `SampleSeededDataset` seeds per
sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

SHORT_SIDE, LONG_SIDE = 800, 1333
MULTI_SCALE_SHORT_SIDES = tuple(range(480, 801, 32))
CROP_POLICY_SHORT_SIDES = (400, 500, 600)
CROP_SIZE_RANGE = (384, 600)


def eval_transform(short_side: int = SHORT_SIDE, long_side: int = LONG_SIDE) -> v2.Transform:
    """Resize keeping the ratio so the image fits (long_side, short_side) as mmdetection's
    `Resize(img_scale=(long_side, short_side), keep_ratio=True)`. A square scale (long_side
    equal to short_side) sets the long side."""
    if long_side <= short_side:  # torchvision's max_size must exceed size; the long side rules
        return KeepRatioResize(None, short_side)
    return KeepRatioResize(short_side, long_side)


class KeepRatioResize(v2.Transform):
    """torchvision's `v2.Resize(size=short_side, max_size=long_side)` (`short_side` None: the
    long side set to `long_side`), the same sizes, but no side rounds to 0 pixels: a 2000 x 1
    image becomes 1333 x 1, not a resize to 0 rows that stops the run."""

    def __init__(self, short_side: int | None, long_side: int) -> None:
        super().__init__()
        self.short_side, self.long_side = short_side, long_side

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        short, long = min(height, width), max(height, width)
        if self.short_side is None:
            new_short, new_long = int(self.long_side * short / long), self.long_side
        else:  # torchvision's arithmetic (int() truncates), so every other size is unchanged
            new_short, new_long = self.short_side, int(self.short_side * long / short)
            if new_long > self.long_side:
                new_short, new_long = int(self.long_side * new_short / new_long), self.long_side
        new_short = max(1, new_short)
        size = (new_long, new_short) if width <= height else (new_short, new_long)
        return {"size": list(size)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class ShortestSize(v2.RandomShortestSize):
    """`v2.RandomShortestSize` (the same draws and sizes) whose sides never round to 0."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = super().make_params(flat_inputs)["size"]
        return {"size": (max(1, height), max(1, width))}


def train_transform_1x(
    short_side: int = SHORT_SIDE, long_side: int = LONG_SIDE, flip: float = 0.5
) -> v2.Transform:
    """The 1x recipe's training pipeline: the eval resize, then a horizontal flip."""
    return v2.Compose([eval_transform(short_side, long_side), v2.RandomHorizontalFlip(flip)])


def train_transform_3x(
    short_sides: Sequence[int] = MULTI_SCALE_SHORT_SIDES,
    long_side: int = LONG_SIDE,
    crop_short_sides: Sequence[int] = CROP_POLICY_SHORT_SIDES,
    crop_size_range: tuple[int, int] = CROP_SIZE_RANGE,
    flip: float = 0.5,
) -> v2.Transform:
    """The 3x recipe's multi-scale training pipeline with the DETR crop policy."""
    multi_scale = ShortestSize(list(short_sides), max_size=long_side, antialias=True)
    crop_then_multi_scale = v2.Compose(
        [
            ShortestSize(list(crop_short_sides), max_size=long_side, antialias=True),
            RandomCropAbsoluteRange(crop_size_range),
            v2.SanitizeBoundingBoxes(min_size=1),
            multi_scale,
        ]
    )
    return v2.Compose(
        [v2.RandomChoice([multi_scale, crop_then_multi_scale]), v2.RandomHorizontalFlip(flip)]
    )


class RandomCropAbsoluteRange(v2.Transform):
    """mmdetection's `RandomCrop(crop_type="absolute_range")`: height and width each drawn
    uniformly from crop_size_range (both ends included; capped at the image's), the top-left
    corner uniformly where the crop fits. Boxes are cut to the crop (follow with
    `SanitizeBoundingBoxes` to drop those left empty)."""

    def __init__(self, crop_size_range: tuple[int, int]) -> None:
        super().__init__()
        low, high = crop_size_range
        if not 0 < low <= high:
            raise ValueError(f"crop_size_range must be 0 < low <= high, got {crop_size_range}")
        self.crop_size_range = (int(low), int(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.crop_size_range
        crop_h = int(torch.randint(min(height, low), min(height, high) + 1, ()))
        crop_w = int(torch.randint(min(width, low), min(width, high) + 1, ()))
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def to_model_input(
    images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device | str
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """The batch on `device` as the detectors take it: images as float in 0..1 (converted on
    the device: uint8 crosses over, a quarter of the bytes), tensors of the targets moved."""
    moved_images = [image.to(device, non_blocking=True).float().div_(255) for image in images]
    moved_targets = [
        {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in t.items()
        }
        for t in targets
    ]
    return moved_images, moved_targets


def detection_eval_transform(config: Any) -> Any:
    """The evaluation (and prediction) resize: keep-ratio into `img_scale` ([long, short])."""
    long_side, short_side = config.img_scale
    return eval_transform(short_side, long_side)


def images_and_targets(samples: list[tuple]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """A batch as torchvision's detectors take it: the images (of different sizes: the model
    pads them) and their targets, in lists."""
    return [image for image, _ in samples], [target for _, target in samples]


def detector_arguments(config: Any) -> dict[str, Any]:
    """The detector's input scale and padding as the recipe's pipeline sets them (its own
    resize off: the pipeline resizes)."""
    long_side, short_side = config.img_scale
    return {
        "min_size": short_side,
        "max_size": long_side,
        "pad_divisor": config.pad_divisor,
        "resize_in_model": False,
    }
