"""Decode one image file into 8-bit RGB, whatever its mode: the one way training, evaluation
and prediction read images.

torchvision's default loader calls `Image.convert("RGB")`, which clips 16-bit images to white and
drops alpha onto whatever colour the transparent pixels happen to store, and ignores the EXIF
orientation a camera records. Here the image is first turned upright as the EXIF orientation
says (`PIL.ImageOps.exif_transpose`, as image viewers do), 16-bit values are rescaled, and
transparent images are composited on white (as an image viewer shows them). Files that cannot
be decoded raise; the caller decides to skip them.

`decode_rgb_tensor` gives the same pixels as a uint8 tensor (3 x H x W) for the training loader:
a plain JPEG (RGB or grayscale, upright, complete) is decoded by simplejpeg (libjpeg-turbo, as
Pillow, with the same accurate DCT and upsampling: the same pixels, in a quarter less CPU time
than Pillow's row by row decoding into 4-byte pixels), everything else (CMYK, EXIF
orientation, PNG, GIF, ...) by `open_rgb` above. torchvision 0.29 deprecates its own decoders
(`torchvision.io.decode_jpeg`, ...) for TorchCodec, which needs FFmpeg's libraries: twins calls
neither.
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
import simplejpeg
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
    """`decode_rgb`'s pixels as a uint8 tensor (3 x H x W, a view of packed H x W x 3 pixels),
    and the mode the file was stored in."""
    mode = _plain_jpeg_mode(data)
    if mode is not None:
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
            return torch.from_numpy(pixels).permute(2, 0, 1), mode
        except ValueError:
            pass  # Pillow decides: it may read what libjpeg refused here, or raise
    image, mode = _decode_with_pil(io.BytesIO(data))
    # A writable copy of Pillow's bytes: callers own the tensor and may change it in place.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1), mode


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_START_OF_FRAME = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
# Segments that say nothing of the mode or orientation: tables, restart interval, comments,
# application segments but APP1 (EXIF, XMP) and an APP2 of MPF (several pictures).
_PASSED_OVER = frozenset((0xC4, 0xCC, 0xDB, 0xDD, 0xE0, *range(0xE2, 0xF0), 0xFE))
_ASK_PILLOW = "ask Pillow"


def _plain_jpeg_mode(data: bytes) -> str | None:
    """ "RGB" or "L" for a complete JPEG that needs no turning; None for anything else.

    The segments before the image data are read here (0.01 ms) where they hold nothing but
    tables, comments and the frame (8-bit, 1 or 3 components); a file with EXIF or XMP (which
    may turn it), several pictures (MPO) or anything unusual is left to Pillow's reading of
    the header (0.04-0.08 ms), which decides as before."""
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return None  # not a JPEG, or truncated: Pillow's rules apply
    mode = _scan_jpeg_header(data)
    return _pillow_jpeg_mode(data) if mode is _ASK_PILLOW else mode


def _scan_jpeg_header(data: bytes) -> str:
    """The mode of a JPEG whose header holds only plain segments, else _ASK_PILLOW."""
    position, mode, end = 2, _ASK_PILLOW, len(data)
    while position + 4 <= end and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or position + 2 + length > end:
            return _ASK_PILLOW
        if marker == 0xDA:  # start of scan: the header is over
            return mode
        if marker in _START_OF_FRAME:
            frame = data[position + 4 : position + 2 + length]
            if mode is not _ASK_PILLOW or len(frame) < 6:
                return _ASK_PILLOW
            bits, layers = frame[0], frame[5]
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            limit = Image.MAX_IMAGE_PIXELS
            if bits != 8 or layers not in (1, 3) or not height or not width:
                return _ASK_PILLOW
            if limit is not None and height * width > limit:
                return _ASK_PILLOW  # Pillow warns, or refuses
            mode = "L" if layers == 1 else "RGB"
        elif marker == 0xE2 and data.startswith(b"MPF\0", position + 4):
            return _ASK_PILLOW  # several pictures: Pillow reads them as MPO
        elif marker not in _PASSED_OVER:
            return _ASK_PILLOW
        position += 2 + length
    return _ASK_PILLOW


def _pillow_jpeg_mode(data: bytes) -> str | None:
    """`_plain_jpeg_mode` by Pillow's reading of the header (which also checks the size
    against its decompression-bomb limit)."""
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
