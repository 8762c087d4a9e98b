"""timm's RandAugment / AutoAugment image ops on uint8 tensors (3 x H x W): the pixels Pillow
computes.

Each function takes the arguments timm's op takes (`timm.data.auto_augment.NAME_TO_OP`: the
level arguments, then `fillcolor` and `resample`), so timm's own `AugmentOp` and `RandAugment`
objects run them: the choice of ops, their probabilities and magnitudes are timm's draws.

- Lookup-table ops (AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd,
  Contrast, Brightness) build Pillow's table: exact (applied with NumPy's `take`, a third of
  the time of Pillow's `point` on each channel).
- Color and Sharpness blend with Pillow's degenerate image (its integer RGB-to-L weights, its
  3 x 3 SMOOTH kernel with the border kept, rounded) and truncate as Pillow's blend does.
- Shears and translations (ShearX/Y, TranslateX/Y, TranslateX/YRel) sample where Pillow's
  `Image.transform(size, AFFINE, matrix)` samples: pixel centres through the same matrix, its
  bicubic kernel (a = -1; or its bilinear / nearest rule), neighbours clamped at the border,
  `fillcolor` where the source point falls outside, clipped and truncated. They move pixels
  along one axis, so each output row (column) is one gather and a 4-tap sum: a level off in a
  few pixels (float rounding), about twice as fast as Pillow at 224 px.
- Rotate and the blurs of the "3a" policies run Pillow itself on the tensor's pixels
  (`on_pil`): a rotation is not separable (Pillow's 4 x 4 bicubic taps per pixel, gathered in
  NumPy, take about twice Pillow's time), and `grid_sample`'s bicubic kernel (a = -0.75)
  would change the pixels by a level or two.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

_BICUBIC = Image.Resampling.BICUBIC
_BILINEAR = Image.Resampling.BILINEAR
_NEAREST = Image.Resampling.NEAREST


def _lut(image: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Map each channel through its own 256-entry table (`lut`: 3 x 256, or 256 for all)."""
    tables = np.broadcast_to(np.asarray(lut, dtype=np.uint8), (image.shape[0], 256))
    planes = image.contiguous().numpy()
    out = np.empty_like(planes)
    for channel, (plane, table) in enumerate(zip(planes, tables, strict=True)):
        np.take(table, plane, out=out[channel])  # a gather from 256 bytes: cached, fast
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
    """Also for 0 bits kept: a black image (`twins.tasks.classify.transforms.posterize`)."""
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return torch.zeros_like(image)
    return image & (0xFF << (8 - bits_to_keep)) & 0xFF


def _gray(image: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB to L: integer ITU-R 601-2 weights, rounded."""
    r, g, b = image.int()
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """Float values already clipped to 0-255, truncated to uint8 (as Pillow converts); NumPy's
    cast takes a fifth of the time of torch's here."""
    return torch.from_numpy(values.numpy().astype(np.uint8))


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """Pillow's `Image.blend(degenerate, image, factor)`: float, clipped, truncated."""
    out = degenerate.float() + factor * (image.float() - degenerate.float())
    return _to_uint8(out.clamp_(0, 255))


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


# ----- affine ops: Pillow's `Image.transform(size, AFFINE, matrix)` on tensors -----


def _resample(kwargs: dict) -> int:
    """The interpolation, drawn as timm draws it where it is a choice (interpolation random)."""
    resample = kwargs.get("resample", _BICUBIC)
    if isinstance(resample, (list, tuple)):
        resample = random.choice(resample)
    return resample


def _fill(image: torch.Tensor, kwargs: dict) -> list[int]:
    fill = kwargs.get("fillcolor", (128, 128, 128))
    return [fill] * image.shape[0] if isinstance(fill, int) else list(fill)


def _bicubic_weights(d: np.ndarray) -> list[np.ndarray]:
    """Pillow's bicubic (Geometry.c): cubic convolution with a = -1, taps at -1, 0, 1, 2."""
    d2 = d * d
    d3 = d2 * d
    return [-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3]


def _line(array: np.ndarray, dim: int, start: int, length: int) -> np.ndarray:
    """`length` pixels of every line from `start` on (a view)."""
    return array[:, :, start : start + length] if dim == 2 else array[:, start : start + length]


def _pad_lines(planes: np.ndarray, dim: int, pad: int) -> np.ndarray:
    """`planes` with `pad` copies of each line's end pixels added at both ends."""
    shape = list(planes.shape)
    shape[dim] += 2 * pad
    padded = np.empty(shape, np.uint8)
    length = planes.shape[dim]
    _line(padded, dim, pad, length)[...] = planes
    _line(padded, dim, 0, pad)[...] = _line(planes, dim, 0, 1)
    _line(padded, dim, pad + length, pad)[...] = _line(planes, dim, length - 1, 1)
    return padded


def _shift_lines(
    image: torch.Tensor, shift: np.ndarray, resample: int, fill: list[int], dim: int
) -> torch.Tensor:
    """Along rows (`dim` 2), output pixel x of row y reads the row at x + shift[y]; along
    columns (`dim` 1), output pixel y of column x reads the column at y + shift[x] (Pillow's
    coordinates: pixel centres at x + 0.5), neighbours clamped at the ends, `fill` where the
    source falls outside.

    The image is padded at both ends of its lines with copies of their end pixels; one gather
    then brings each line's taps together (a slice, for a translation: every line starts at
    the same place), and each tap is a slice of that. In NumPy: its small and elementwise
    operations cost a fraction of torch's here (0.7-1.1 ms at 224 px against 1.0-1.5)."""
    planes = image.numpy()
    channels, length, lines = planes.shape[0], planes.shape[dim], planes.shape[3 - dim]
    line_shape = (lines, 1) if dim == 2 else (1, lines)  # a value per line, broadcast
    translation = bool((shift == shift[0]).all())  # every line shifted alike
    per_line = (shift[:1] if translation else shift).reshape((-1, 1) if dim == 2 else (1, -1))
    position = (np.arange(length) + 0.5).reshape(line_shape[::-1]) + per_line
    outside = (position < 0) | (position >= length)
    if resample == _NEAREST:  # Pillow reads the pixel the point falls in
        first, taps, weights = np.floor(shift + 0.5), 1, None
    else:
        first = np.floor(shift)
        d = (shift - first).astype(np.float32).reshape(line_shape)
        if resample == _BILINEAR:
            taps, weights = 2, [1 - d, d]
        else:
            first, taps, weights = first - 1, 4, _bicubic_weights(d)
    first = first.astype(np.int64)
    pad = int(np.abs(first).max()) + taps
    padded = _pad_lines(planes, dim, pad)
    span = length + taps - 1
    if translation:
        source = _line(padded, dim, pad + int(first[0]), span)
    else:
        stride = padded.shape[2]
        steps = np.arange(span)
        if dim == 2:
            index = (np.arange(lines) * stride + pad + first).reshape(lines, 1) + steps
        else:
            index = (steps.reshape(span, 1) + pad + first) * stride + np.arange(lines)
        source = np.take(padded.reshape(channels, -1), index.ravel(), axis=1)
        source = source.reshape(channels, *index.shape)
    if weights is None:
        out = _line(source, dim, 0, length).copy()
    else:
        out = np.multiply(_line(source, dim, 0, length), weights[0], dtype=np.float32)
        product = np.empty_like(out)
        for tap in range(1, taps):  # each product rounded, then added, as one would write it
            out += np.multiply(_line(source, dim, tap, length), weights[tap], out=product)
        # Pillow clips, then converts to UINT8 by truncation.
        out = np.clip(out, 0, 255, out=out).astype(np.uint8)
    if outside.any():
        # A multiply and an add on uint8 (exact: the kept pixels times 1, the fill times 0),
        # several times faster than a masked copy.
        out *= ~outside
        out += np.asarray(fill, np.uint8).reshape(-1, 1, 1) * outside
    return torch.from_numpy(out)


def _affine(image: torch.Tensor, matrix: tuple, kwargs: dict) -> torch.Tensor:
    """Pillow's affine transform along one axis (shears and translations): the output pixel
    centre (x + .5, y + .5) reads the source at (x + .5 + b (y + .5) + c, y + .5) or at
    (x + .5, y + .5 + d (x + .5) + f)."""
    _, b, c, d, _, f = matrix
    resample, fill = _resample(kwargs), _fill(image, kwargs)
    _, height, width = image.shape
    if d == 0 and f == 0:  # along rows
        shift = b * (np.arange(height, dtype=np.float64) + 0.5) + c
        return _shift_lines(image, shift, resample, fill, dim=2)
    shift = d * (np.arange(width, dtype=np.float64) + 0.5) + f
    return _shift_lines(image, shift, resample, fill, dim=1)


def shear_x(image: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, factor, 0, 0, 1, 0), kwargs)


def shear_y(image: torch.Tensor, factor: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, 0, 0, factor, 1, 0), kwargs)


def translate_x_rel(image: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, 0, pct * image.shape[2], 0, 1, 0), kwargs)


def translate_y_rel(image: torch.Tensor, pct: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, 0, 0, 0, 1, pct * image.shape[1]), kwargs)


def translate_x_abs(image: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, 0, pixels, 0, 1, 0), kwargs)


def translate_y_abs(image: torch.Tensor, pixels: float, **kwargs: Any) -> torch.Tensor:
    return _affine(image, (1, 0, 0, 0, 1, pixels), kwargs)


def planar(image: torch.Tensor) -> torch.Tensor:
    """`image` (C x H x W, any strides) as a contiguous tensor: NumPy's copy takes a third of
    the time of torch's `contiguous` to pull the channels of an interleaved image apart (0.06
    against 0.23 ms at 224 x 224)."""
    if image.is_contiguous():
        return image
    return torch.from_numpy(np.ascontiguousarray(image.numpy()))


def on_pil(op: Callable) -> Callable:
    """A PIL op as a tensor op (for the ops that have no tensor version)."""

    def tensor_op(image: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Pillow copies a contiguous array faster than a transposed view.
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        out = np.asarray(op(pil, *args, **kwargs)).transpose(2, 0, 1)
        return torch.from_numpy(out.copy(order="C"))  # see `planar`

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
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x_abs,
    "TranslateY": translate_y_abs,
    "TranslateXRel": translate_x_rel,
    "TranslateYRel": translate_y_rel,
}


def tensor_op(name: str, pil_op: Callable) -> Callable:
    """The tensor version of timm's op `name`; `pil_op` run on PIL where there is none."""
    if name.startswith("Posterize"):
        return posterize
    return TENSOR_OPS.get(name) or on_pil(pil_op)
