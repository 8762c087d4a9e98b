"""Decode one image file into 8-bit RGB, whatever its mode: the one way training, evaluation
and prediction read images.

torchvision's default loader calls `Image.convert("RGB")`, which clips 16-bit images to white and
drops alpha onto whatever colour the transparent pixels happen to store, and ignores the EXIF
orientation a camera records. Here the image is first turned upright as the EXIF orientation
says (`PIL.ImageOps.exif_transpose`, as image viewers do), 16-bit values are rescaled, and
transparent images are composited on white (as an image viewer shows them). Files that cannot
be decoded raise; the caller decides to skip them.

`decode_rgb_tensor` gives the same pixels as a uint8 tensor (3 x H x W) for the training loader:
a plain JPEG (RGB or grayscale, upright, complete) is decoded by `torchvision.io.decode_jpeg`
(libjpeg-turbo, as Pillow), everything else (CMYK, EXIF orientation, PNG, GIF, ...) by
`open_rgb` above.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_jpeg

# Extensions of the files searched for as images; a GIF is read as its first frame.
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether `path` has one of IMAGE_EXTENSIONS (any case): the files read as images."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


# Modes holding one 16- or 32-bit integer channel (16-bit PNG / TIFF grayscale).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


_ORIENTATION = 0x0112  # the EXIF tag


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
    """How the data sets decode a split's image bytes: the training split to uint8 tensors (what
    its transform takes), the others to PIL images (what evaluation and predict share)."""
    return decode_rgb_tensor if split == "train" else decode_rgb


def decode_rgb_tensor(data: bytes) -> tuple[torch.Tensor, str]:
    """`decode_rgb`'s pixels as a uint8 tensor (3 x H x W), and the mode the file was stored in."""
    mode = _plain_jpeg_mode(data)
    if mode is not None:
        try:
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(pixels, mode=ImageReadMode.RGB), mode
        except RuntimeError:
            pass  # Pillow decides: it may read what libjpeg refused here, or raise
    image, mode = _decode_with_pil(io.BytesIO(data))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1), mode


def _plain_jpeg_mode(data: bytes) -> str | None:
    """ "RGB" or "L" for a complete JPEG that needs no turning; None for anything else.
    Pillow reads the header (and checks the size against its decompression-bomb limit)."""
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return None  # not a JPEG, or truncated: Pillow's rules apply
    try:
        with Image.open(io.BytesIO(data)) as header:
            if header.format != "JPEG" or header.mode not in ("RGB", "L"):
                return None
            if header.getexif().get(_ORIENTATION, 1) != 1:
                return None
            return header.mode
    except Exception:  # unreadable header or EXIF block: Pillow's path decides
        return None


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
