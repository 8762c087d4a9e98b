"""safetensors files with the model description in their metadata.

safetensors metadata is a str -> str map: each of our keys holds a JSON value, and `format` is
"pt" as the Hugging Face tools expect of PyTorch tensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from twins.errors import TwinsError
from twins.weights.atomic import atomic_path
from twins.weights.state_dict import METADATA_KEYS, StateDict


def encode_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    encoded = {"format": "pt"}
    for key in METADATA_KEYS:
        if metadata.get(key) is not None:
            encoded[key] = json.dumps(metadata[key])
    return encoded


def decode_metadata(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key in METADATA_KEYS:
        if key not in (metadata or {}):
            continue
        try:
            decoded[key] = json.loads(metadata[key])
        except json.JSONDecodeError:
            decoded[key] = metadata[key]  # written by another tool as a bare string
    return decoded


def read_safetensors(path: str | os.PathLike) -> StateDict:
    try:
        with safe_open(os.fspath(path), framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
            metadata = decode_metadata(file.metadata())
    except (SafetensorError, OSError, ValueError) as error:
        raise TwinsError(f"{path}: not a readable safetensors file ({error})") from None
    metadata["format"] = "safetensors"
    return StateDict(tensors, metadata)


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(plain, os.fspath(temporary), metadata=encode_metadata(metadata or {}))
