"""`save_weights`: official-layout tensors -> a file whose format the extension names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from twins.errors import TwinsError
from twins.weights.mindspore import write_mindspore
from twins.weights.mindspore_layout import to_mindspore
from twins.weights.safetensors_io import write_safetensors
from twins.weights.torch_pth import write_torch

SUFFIXES = {".safetensors": "safetensors", ".pth": "torch", ".pt": "torch", ".ckpt": "mindspore"}


def format_for_path(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise TwinsError(
            f"{path}: unknown weights extension {suffix or '(none)'!r}; use "
            f"{', '.join(SUFFIXES)} (safetensors, PyTorch state dict, MindSpore checkpoint)"
        )
    return SUFFIXES[suffix]


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write atomically; returns the format written.

    `.safetensors` keeps the metadata (default: `state_dict.metadata` when it has one); `.pth` /
    `.pt` is a bare official-layout state dict; `.ckpt` is the seed's MindSpore layout (`model.`
    prefix, gamma/beta, separate q/k/v) that MindSpore's `load_checkpoint` reads.
    """
    kind = format_for_path(path)
    if metadata is None:
        metadata = getattr(state_dict, "metadata", {})
    if kind == "safetensors":
        write_safetensors(state_dict, path, metadata)
    elif kind == "torch":
        write_torch(state_dict, path)
    else:
        write_mindspore(to_mindspore(state_dict), path)
    return kind
