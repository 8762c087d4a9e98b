"""safetensors files with the model description (`twins.weights.metadata`) in their metadata.

safetensors metadata is a str -> str map: each of our keys holds a JSON value, and `format` is
"pt" as the Hugging Face tools expect of PyTorch tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from twins.atomic import atomic_path
from twins.errors import TwinsError
from twins.weights.metadata import from_strings, to_strings
from twins.weights.state_dict import StateDict


def read_safetensors(path: str | os.PathLike) -> StateDict:
    try:
        with safe_open(os.fspath(path), framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
            metadata = from_strings(file.metadata())
    except (SafetensorError, OSError, ValueError) as error:
        raise TwinsError(f"{path}: not a readable safetensors file ({error})") from error
    metadata["format"] = "safetensors"
    return StateDict(tensors, metadata)


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    content = save(plain, metadata={"format": "pt", **to_strings(metadata or {})})
    # Written here rather than by `save_file`, which makes its own temporary file of mode 0600:
    # the file gets the mode every other file gets (0644 under the usual umask).
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)
