"""Decode one image file into 8-bit RGB, whatever its mode.

torchvision's default loader calls `Image.convert("RGB")`, which clips 16-bit images to white and
drops alpha onto whatever colour the transparent pixels happen to store. Here 16-bit values are
rescaled and transparent images are composited on white (as an image viewer shows them).
Files that cannot be decoded raise; the dataset decides to skip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Modes holding one 16- or 32-bit integer channel (16-bit PNG / TIFF grayscale).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def open_rgb(path: str | Path) -> tuple[Image.Image, str]:
    """Read `path` fully and return (RGB image, mode the file was stored in)."""
    with open(path, "rb") as file:
        image = Image.open(file)
        image.load()  # decode now, inside the file's lifetime, so truncation raises here
    return to_rgb(image), image.mode


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
