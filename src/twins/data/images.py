"""Decode one image file into 8-bit RGB, whatever its mode: the one way training, evaluation
and prediction read images.

torchvision's default loader calls `Image.convert("RGB")`, which clips 16-bit images to white and
drops alpha onto whatever colour the transparent pixels happen to store, and ignores the EXIF
orientation a camera records. Here the image is first turned upright as the EXIF orientation
says (`PIL.ImageOps.exif_transpose`, as image viewers do), 16-bit values are rescaled, and
transparent images are composited on white (as an image viewer shows them). Files that cannot
be decoded raise; the caller decides to skip them.

`decode_rgb_tensor` gives the same pixels as a uint8 tensor (3 x H x W) for the training loader.
Every image goes through Pillow (libjpeg-turbo inside): torchvision 0.29 deprecates its own
decoders (`torchvision.io.decode_jpeg`, ...) for TorchCodec, which needs FFmpeg's libraries.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.datasets.folder import IMG_EXTENSIONS

# Extensions of the files searched for as images; a GIF is read as its first frame.
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether `path` has one of IMAGE_EXTENSIONS (any case): the files read as images."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


# Modes holding one 16- or 32-bit integer channel (16-bit PNG / TIFF grayscale).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def open_rgb(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """Read `path` fully and return (upright RGB image, mode the file was stored in)."""
    with open(path, "rb") as file:
        return _decode_with_pil(file)


def _decode_with_pil(file) -> tuple[Image.Image, str]:
    image = Image.open(file)
    image.load()  # decode now, inside the file's lifetime, so truncation raises here
    mode = image.mode
    upright(image)
    return to_rgb(image), mode


def decode_rgb(data: bytes) -> tuple[Image.Image, str]:
    """`open_rgb` for an image file's bytes (a sample of a packed data set)."""
    return _decode_with_pil(io.BytesIO(data))


def decoder_for(split: str) -> Callable[[bytes], tuple[Any, str]]:
    """How the data sets decode a split's image bytes: every split to PIL images. Evaluation
    and predict share them; the training transform crops them in Pillow, so that only the
    crop's pixels are copied into a tensor."""
    return decode_rgb


def decode_rgb_tensor(data: bytes) -> tuple[torch.Tensor, str]:
    """`decode_rgb`'s pixels as a uint8 tensor (3 x H x W, a view of packed H x W x 3 pixels),
    and the mode the file was stored in."""
    image, mode = _decode_with_pil(io.BytesIO(data))
    # A writable copy of Pillow's bytes: callers own the tensor and may change it in place.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1), mode


def upright(image: Image.Image) -> None:
    """Rotate / mirror `image` in place as its EXIF orientation says, and drop the tag."""
    # A damaged EXIF block leaves the image as stored: the pixels decoded, the tag is a hint.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, PA, CMYK, I;16, RGBA, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_INTEGER_MODES:
        # Treat the values as 16-bit (what PNG and TIFF store) and keep their full range.
        values = np.asarray(image, dtype=np.int64).clip(0, 65535)
        gray = (values * 255 + 32767) // 65535
        return Image.fromarray(gray.astype(np.uint8)).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def find_images(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and glob patterns -> image paths, plus
    the inputs that named nothing."""
    images: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            images += found
            if not found:
                missing.append((item, "folder holds no images"))
        elif path.is_file():
            images.append(path)  # named explicitly: tried whatever its extension
        elif glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            found = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            images += found
            if not found:
                missing.append((item, "pattern matches no images"))
        else:
            missing.append((item, "no such file or folder"))
    return list(dict.fromkeys(images)), missing
