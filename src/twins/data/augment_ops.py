"""timm's RandAugment / AutoAugment image ops on uint8 tensors (3 x H x W), pixel for pixel
what Pillow computes.

Each function takes the arguments timm's op takes (`timm.data.auto_augment.NAME_TO_OP`: the
level arguments, then `fillcolor` and `resample`), so timm's own `AugmentOp` and `RandAugment`
objects run them: the choice of ops, their probabilities and magnitudes are timm's draws.

- Lookup-table ops (AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd,
  Contrast, Brightness) build Pillow's table: exact.
- Color and Sharpness blend with Pillow's degenerate image (its integer RGB-to-L weights, its
  3 x 3 SMOOTH kernel with the border kept, rounded) and truncate as Pillow's blend does.
- The affine ops (Rotate, ShearX/Y, TranslateX/Y) and the blurs run Pillow itself on the
  tensor's pixels (`on_pil`): Pillow's bicubic affine sampler (a = -1, clamped neighbours,
  `fillcolor` outside) measured as fast as any tensor version on 224 px images on one core
  (`grid_sample`'s bicubic is a = -0.75, so it would also change the pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image


def _lut(image: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Map each channel through its own 256-entry table (`lut`: 3 x 256, or 256 for all), with
    Pillow's `point` on each channel plane (faster than indexing in torch or NumPy)."""
    tables = np.broadcast_to(np.asarray(lut, dtype=np.uint8), (image.shape[0], 256))
    height, width = image.shape[1:]
    planes = image.contiguous().numpy()
    out = np.empty_like(planes)
    for channel, (plane, table) in enumerate(zip(planes, tables, strict=True)):
        pil = Image.frombuffer("L", (width, height), plane, "raw", "L", 0, 1)
        out[channel] = np.asarray(pil.point(table.tolist()))
    return torch.from_numpy(out)


_VALUES = np.arange(256)


def auto_contrast(image: torch.Tensor, **_: Any) -> torch.Tensor:
    tables = []
    lows, highs = image.amin(dim=(1, 2)).tolist(), image.amax(dim=(1, 2)).tolist()
    for low, high in zip(lows, highs, strict=True):
        if high <= low:
            tables.append(_VALUES)
            continue
        scale = 255.0 / (high - low)
        tables.append(np.clip((_VALUES * scale - low * scale).astype(np.int64), 0, 255))
    return _lut(image, np.stack(tables))


def equalize(image: torch.Tensor, **_: Any) -> torch.Tensor:
    tables = []
    for channel in image.numpy():
        histogram = np.bincount(channel.ravel(), minlength=256)
        used = histogram[histogram > 0]
        step = int(used.sum() - used[-1]) // 255 if len(used) > 1 else 0
        if not step:
            tables.append(_VALUES)
            continue
        before = np.cumsum(histogram) - histogram  # pixels below each value
        tables.append(np.minimum((step // 2 + before) // step, 255))
    return _lut(image, np.stack(tables))


def invert(image: torch.Tensor, **_: Any) -> torch.Tensor:
    return 255 - image


def solarize(image: torch.Tensor, thresh: int, **_: Any) -> torch.Tensor:
    return _lut(image, np.where(thresh > _VALUES, _VALUES, 255 - _VALUES))


def solarize_add(image: torch.Tensor, add: int, thresh: int = 128, **_: Any) -> torch.Tensor:
    return _lut(image, np.where(thresh > _VALUES, np.minimum(255, _VALUES + add), _VALUES))


def posterize(image: torch.Tensor, bits_to_keep: int, **_: Any) -> torch.Tensor:
    """Also for 0 bits kept: a black image (`twins.data.transforms.posterize`)."""
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return torch.zeros_like(image)
    return image & (0xFF << (8 - bits_to_keep)) & 0xFF


def _gray(image: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB to L: integer ITU-R 601-2 weights, rounded."""
    r, g, b = image.int()
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's `Image.blend(degenerate, image, factor)`: float, clipped, truncated."""
    out = degenerate.float() + factor * (image.float() - degenerate.float())
    return out.clamp_(0, 255).to(torch.uint8)


def color(image: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    return _blend(_gray(image).expand_as(image), image, factor)


def _blend_table(degenerate: int, factor: float) -> np.ndarray:
    """`_blend` with a constant degenerate image, as a table."""
    values = np.float32(degenerate) + np.float32(factor) * (_VALUES.astype(np.float32) - degenerate)
    return np.clip(values, 0, 255).astype(np.uint8)


def contrast(image: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    mean = int(_gray(image).double().mean().item() + 0.5)
    return _lut(image, _blend_table(mean, factor))


def brightness(image: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    return _lut(image, _blend_table(0, factor))


def sharpness(image: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    """Blend with Pillow's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded;
    the outermost rows and columns kept)."""
    height, width = image.shape[1:]
    if height < 3 or width < 3:
        return image.clone()
    wide = image.short()
    rows = wide[:, :-2] + wide[:, 1:-1] + wide[:, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
    smooth = wide.clone()
    smooth[:, 1:-1, 1:-1] = (box + 4 * wide[:, 1:-1, 1:-1] + 6).div(13, rounding_mode="floor")
    return _blend(smooth, image, factor)


def desaturate(image: torch.Tensor, factor: float, **_: Any) -> torch.Tensor:
    return color(image, min(1.0, max(0.0, 1.0 - factor)))


def on_pil(op: Callable) -> Callable:
    """A PIL op as a tensor op (for the ops that have no tensor version)."""

    def tensor_op(image: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        return torch.from_numpy(np.array(op(pil, *args, **kwargs))).permute(2, 0, 1)

    return tensor_op


# timm's op names (`timm.data.auto_augment.NAME_TO_OP`) to their tensor versions.
TENSOR_OPS: dict[str, Callable] = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "PosterizeIncreasing": posterize,
    "PosterizeOriginal": posterize,
    "Solarize": solarize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "ColorIncreasing": color,
    "Contrast": contrast,
    "ContrastIncreasing": contrast,
    "Brightness": brightness,
    "BrightnessIncreasing": brightness,
    "Sharpness": sharpness,
    "SharpnessIncreasing": sharpness,
    "Desaturate": desaturate,
}


def tensor_op(name: str, pil_op: Callable) -> Callable:
    """The tensor version of timm's op `name`; `pil_op` run on PIL where there is none."""
    if name.startswith("Posterize"):
        return posterize
    return TENSOR_OPS.get(name) or on_pil(pil_op)
