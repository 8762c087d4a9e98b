"""Decode one image file into 8-bit RGB, whatever its mode: the one way training, evaluation
and prediction read images.

torchvision's default loader calls `Image.convert("RGB")`, which clips 16-bit images to white and
drops alpha onto whatever colour the transparent pixels happen to store, and ignores the EXIF
orientation a camera records. Here the image is first turned upright as the EXIF orientation
says (`PIL.ImageOps.exif_transpose`, as image viewers do), 16-bit values are rescaled, and
transparent images are composited on white (as an image viewer shows them). Files that cannot
be decoded raise; the caller decides to skip them.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
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
        image = Image.open(file)
        image.load()  # decode now, inside the file's lifetime, so truncation raises here
    mode = image.mode
    upright(image)
    return to_rgb(image), mode


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
