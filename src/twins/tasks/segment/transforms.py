"""The official ADE20K segmentation pipelines (mmsegmentation 0.12, Twins'
`configs/_base_/datasets/ade20k.py`) on torchvision `tv_tensors`.

Training, per image and label, in mmsegmentation's order:
1. keep-ratio resize: a ratio r drawn uniformly from `ratio_range` scales `img_scale` to
   (int(2048 r), int(512 r)); the image is scaled by min(long / max(h, w), short / min(h, w)) of
   that scale, each side rounded as int(side * factor + 0.5) (`mmcv.imrescale`); bilinear without
   antialiasing for the image (cv2's INTER_LINEAR), nearest for the label;
2. random crop of `crop_size` (the whole side where the image is smaller): up to ten further
   boxes are drawn while the crop's most frequent class covers `cat_max_ratio` or more of its
   labelled pixels (or it holds a single class), the ignore index not counted; the last box drawn
   is kept;
3. horizontal flip with probability `hflip`;
4. photometric distortion (`photometric_distortion`);
5. normalisation with `mean` and `std` on 0..255 RGB;
6. padding at the bottom and right to `crop_size`: 0 for the (normalised) image, 255 for the label.

Test: the same keep-ratio resize to `img_scale` (short side 512, long side at most 2048), then
normalisation; no padding. The label stays at the original size, where predictions are compared.

Extreme aspect ratios (a 2000 x 1 image): a resized side never rounds to 0 but to 1 pixel
(mmcv's rounding would give an empty image); an input under the backbone's smallest side is
padded for the network (`pad_to_side`) and its logits cropped back.

Randomness: every draw comes from the `generator` given to the call, else from torch's default
generator, which `twins.train.sample_seeds.SampleSeededDataset` seeds from (seed, epoch, index)
for each sample; `sample_generator(seed, epoch, index)` gives such a generator explicitly. Either
way a sample's augmentation is a function of (seed, epoch, index) alone. The draws are torch's,
so they follow mmsegmentation's distributions, not its NumPy stream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from twins.seeds import derive_seed

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
IMG_SCALE = (2048, 512)
RATIO_RANGE = (0.5, 2.0)
CROP_SIZE = (512, 512)
CAT_MAX_RATIO = 0.75
IGNORE_INDEX = 255
# mmsegmentation draws ten more boxes at most before it keeps one that breaks the cap.
CROP_RETRIES = 10
# mmsegmentation's MultiScaleFlipAug ratios for --aug-test (the paper's 0.5 to 1.75).
TTA_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample's augmentation draws in an epoch."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index))


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(height, width) after `mmcv.imrescale(image, scale)`: the largest keep-ratio size with the
    long side at most max(scale) and the short side at most min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def random_scale(
    img_scale: tuple[int, int], ratio_range: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int]:
    """mmsegmentation's `Resize.random_sample_ratio`: `img_scale` times a uniform ratio."""
    low, high = ratio_range
    ratio = float(torch.rand((), generator=generator)) * (high - low) + low
    return int(img_scale[0] * ratio), int(img_scale[1] * ratio)


def resize_pair(
    image: torch.Tensor, label: torch.Tensor | None, scale: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep-ratio resize of image (bilinear) and label (nearest) to `rescale_size(scale)`."""
    size = list(rescale_size(image.shape[-2], image.shape[-1], scale))
    image = F.resize(tv_tensors.Image(image), size, InterpolationMode.BILINEAR, antialias=False)
    if label is not None:
        label = F.resize(tv_tensors.Mask(label), size, InterpolationMode.NEAREST)
    return image, label


def random_crop_box(
    label: torch.Tensor,
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    generator: torch.Generator | None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of mmsegmentation's `RandomCrop` on a label of H x W."""
    height, width = label.shape[-2:]

    def draw() -> tuple[int, int, int, int]:
        top = int(torch.randint(max(height - crop_size[0], 0) + 1, (), generator=generator))
        left = int(torch.randint(max(width - crop_size[1], 0) + 1, (), generator=generator))
        return top, left, min(crop_size[0], height), min(crop_size[1], width)

    box = draw()
    if cat_max_ratio < 1.0:
        for _ in range(CROP_RETRIES):
            top, left, h, w = box
            crop = label[..., top : top + h, left : left + w]
            counts = torch.bincount(crop[crop != ignore_index].flatten().long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = draw()
    return box


def photometric_distortion(
    image: torch.Tensor,
    generator: torch.Generator | None,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> torch.Tensor:
    """mmsegmentation's `PhotoMetricDistortion` on a uint8 RGB image (3 x H x W).

    Each step applies with probability 1/2: brightness (add a uniform delta), contrast (multiply
    by a uniform factor) first or last (a coin), saturation (multiply HSV saturation), hue (add an
    integer in [-hue_delta, hue_delta) of cv2's 180 hue steps). As in mmsegmentation, brightness
    and contrast clip to 0..255 and truncate to uint8. Saturation and hue are computed in floating
    point (mmcv's rounds HSV to cv2's uint8 steps in between), so values may differ by a level.
    """

    def coin() -> bool:
        return bool(torch.randint(2, (), generator=generator))

    def uniform(low: float, high: float) -> float:
        return float(torch.rand((), generator=generator)) * (high - low) + low

    def affine(img: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
        return (img.float() * alpha + beta).clamp(0, 255).to(torch.uint8)

    def contrast(img: torch.Tensor) -> torch.Tensor:
        return affine(img, alpha=uniform(*contrast_range)) if coin() else img

    if coin():
        image = affine(image, beta=uniform(-brightness_delta, brightness_delta))
    contrast_first = coin()
    if contrast_first:
        image = contrast(image)
    if coin():
        image = scale_saturation(image, uniform(*saturation_range))
    if coin():
        shift = int(torch.randint(-hue_delta, hue_delta, (), generator=generator))
        image = F.adjust_hue(image, shift / 180)
    if not contrast_first:
        image = contrast(image)
    return image


def scale_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply the HSV saturation of a uint8 RGB image by `factor` (capped at 1), keeping hue
    and value. torchvision's `adjust_saturation` blends with grey instead, another operation."""
    rgb = image.float()
    value = rgb.amax(dim=0, keepdim=True)
    spread = value - rgb.amin(dim=0, keepdim=True)
    # Each channel is value - (value - channel); scaling saturation by k scales that gap by k,
    # and saturation (spread / value) cannot pass 1.
    gain = torch.minimum(torch.full_like(value, factor), value / spread.clamp(min=1e-6))
    out = value - (value - rgb) * gain
    return out.round().clamp(0, 255).to(torch.uint8)


def pad_to_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """`images` (... x H x W, normalised) padded with 0 at the bottom and right to at least
    `side` pixels each way, as training pads its crops: the backbone's smallest input, for
    images whose short side resizes below it. The network's output over the original
    H x W is `output[..., :H, :W]`."""
    bottom, right = max(side - images.shape[-2], 0), max(side - images.shape[-1], 0)
    if not (bottom or right):
        return images
    return torch.nn.functional.pad(images, (0, right, 0, bottom))


def normalize(image: torch.Tensor, mean: tuple = MEAN, std: tuple = STD) -> torch.Tensor:
    """A uint8 RGB image as float32, standardised with `mean` and `std` given on 0..255."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    return (image.float() - mean_t) / std_t


class SegTrainTransform:
    """The official training pipeline: (uint8 image, uint8 label) -> (float32 3 x crop image,
    int64 crop label), see the module's docstring."""

    def __init__(
        self,
        img_scale: tuple[int, int] = IMG_SCALE,
        ratio_range: tuple[float, float] = RATIO_RANGE,
        crop_size: tuple[int, int] = CROP_SIZE,
        cat_max_ratio: float = CAT_MAX_RATIO,
        hflip: float = 0.5,
        photometric: bool = True,
        mean: tuple = MEAN,
        std: tuple = STD,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.img_scale, self.ratio_range = tuple(img_scale), tuple(ratio_range)
        self.crop_size, self.cat_max_ratio = tuple(crop_size), cat_max_ratio
        self.hflip, self.photometric = hflip, photometric
        self.mean, self.std, self.ignore_index = tuple(mean), tuple(std), ignore_index

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scale = random_scale(self.img_scale, self.ratio_range, generator)
        image, label = resize_pair(image, label, scale)
        top, left, height, width = random_crop_box(
            label, self.crop_size, self.cat_max_ratio, generator, self.ignore_index
        )
        image = F.crop(image, top, left, height, width)
        label = F.crop(label, top, left, height, width)
        if self.hflip > 0 and torch.rand((), generator=generator) < self.hflip:
            image, label = F.horizontal_flip(image), F.horizontal_flip(label)
        if self.photometric:
            image = photometric_distortion(image.as_subclass(torch.Tensor), generator)
        image = normalize(image, self.mean, self.std)
        bottom, right = self.crop_size[0] - height, self.crop_size[1] - width
        image = F.pad(image, [0, 0, right, bottom], fill=0)
        label = F.pad(tv_tensors.Mask(label), [0, 0, right, bottom], fill=self.ignore_index)
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).long()


class SegTestTransform:
    """The official test pipeline: keep-ratio resize to `img_scale`, normalise, no padding.
    (uint8 image, label) -> (float32 image, int64 label at the original size)."""

    def __init__(
        self, img_scale: tuple[int, int] = IMG_SCALE, mean: tuple = MEAN, std: tuple = STD
    ) -> None:
        self.img_scale, self.mean, self.std = tuple(img_scale), tuple(mean), tuple(std)

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """The network's input for a uint8 RGB image (3 x H x W)."""
        resized, _ = resize_pair(image, None, self.img_scale)
        return normalize(resized.as_subclass(torch.Tensor), self.mean, self.std)

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(image), label.as_subclass(torch.Tensor).long()


def collate_crops(samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training samples (fixed-size crops) as (N x 3 x H x W images, N x H x W labels).
    `twins.data.loader.collate_batch` does the same where broken samples (None) may come."""
    return default_collate([tuple(sample) for sample in samples])


def collate_whole_images(samples: list[Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Test samples of different sizes as (list of images, list of labels), in order, the
    samples of broken files (None) left out."""
    samples = [sample for sample in samples if sample is not None]
    return [sample[0] for sample in samples], [sample[1] for sample in samples]
