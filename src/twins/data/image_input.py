"""One image, however a caller holds it, as the decoders give it: a path or URL (read through
`twins.storage`), a callable giving a file's bytes (a packed sample), a file's bytes, a PIL
image, a NumPy array (H x W or H x W x C, uint8) or a tensor (C x H x W, uint8, or float in
0..1). Files are decoded as the data sets decode them (`twins.data.images`: EXIF orientation,
16-bit and alpha handled)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twins import storage
from twins.data.images import decode_rgb, decode_rgb_tensor, to_rgb

# What a file-like input is: read for its bytes, then decoded.
FILE_TYPES = (str, os.PathLike, bytes, bytearray)


def image_bytes(source: str | os.PathLike | bytes | Callable[[], bytes]) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if callable(source):
        return source()
    return storage.read_bytes(os.fspath(source))


def is_file_like(source: Any) -> bool:
    return isinstance(source, FILE_TYPES) or (
        callable(source) and not isinstance(source, (Image.Image, torch.Tensor))
    )


def _decoded(decode: Callable[[bytes], tuple[Any, str]], data: bytes) -> Any:
    """`decode`'s image of a file's bytes; ValueError in words where it is none (Pillow's own
    message names an in-memory buffer by its address, which differs from run to run)."""
    if not data:
        raise ValueError("the file is empty (0 bytes)")
    try:
        return decode(data)[0]
    except UnidentifiedImageError as error:
        raise ValueError(
            f"not an image file Pillow can read ({len(data)} bytes, starting {data[:8]!r})"
        ) from error


def as_pil(source: Any) -> Image.Image:
    """The image as an RGB PIL image."""
    if is_file_like(source):
        return _decoded(decode_rgb, image_bytes(source))
    if isinstance(source, Image.Image):
        return to_rgb(source.copy())
    return Image.fromarray(_hwc_uint8(source))


def as_tensor(source: Any) -> torch.Tensor:
    """The image as a uint8 tensor, 3 x H x W (RGB)."""
    if is_file_like(source):
        return _decoded(decode_rgb_tensor, image_bytes(source))
    if isinstance(source, Image.Image):
        return torch.from_numpy(np.array(to_rgb(source.copy()))).permute(2, 0, 1)
    return torch.from_numpy(_hwc_uint8(source)).permute(2, 0, 1).contiguous()


def _hwc_uint8(source: Any) -> np.ndarray:
    """An array or tensor as H x W x 3 uint8 pixels; ValueError saying what is expected."""
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.is_floating_point():
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        if tensor.dim() == 3:
            tensor = tensor.permute(1, 2, 0)  # C x H x W, torchvision's layout
        array = tensor.numpy()
    elif isinstance(source, np.ndarray):
        array = source
    else:
        raise ValueError(
            f"an image is a path, URL, PIL image, array or tensor, not {type(source).__name__}"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or array.dtype != np.uint8:
        raise ValueError(
            f"an image array is H x W, H x W x 1, 3 or 4 of uint8 (a tensor C x H x W, uint8 or "
            f"float in 0..1), not {array.dtype} of shape {tuple(array.shape)}"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])
