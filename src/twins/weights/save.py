"""`save_weights`: official-layout tensors -> a file whose format the extension names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from twins.errors import TwinsError
from twins.weights.formats import format_for_path
from twins.weights.mindspore import write_mindspore
from twins.weights.safetensors_io import write_safetensors
from twins.weights.torch_pth import is_training_checkpoint, write_torch


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write atomically; returns the format written (`twins.weights.formats.FORMATS`).

    `metadata` (default: `state_dict.metadata` when it has one) is kept by every format:
    `.safetensors`, `.pth` / `.pt` (a bare official-layout state dict) and `.ckpt` (the seed's
    MindSpore layout, `model.` prefix, gamma/beta, separate q/k/v, that MindSpore's
    `load_checkpoint` reads, with the metadata in a string entry).
    """
    kind = format_for_path(path).name
    if metadata is None:
        metadata = getattr(state_dict, "metadata", {})
    if kind == "safetensors":
        write_safetensors(state_dict, path, metadata)
    elif kind == "torch":
        write_torch(state_dict, path, metadata)
    else:
        write_mindspore(state_dict, path, metadata)
    return kind


def check_destination(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Refuse a destination that is the source file itself (by any path or link) or a training
    checkpoint: writing weights there would destroy what they came from, or a resumable run."""
    source, destination = Path(source), Path(destination)
    if destination.exists() and source.exists() and os.path.samefile(source, destination):
        raise TwinsError(
            f"{destination} is the file being read ({source}): choose another destination",
            argument="destination",
        )
    if destination.is_file() and is_training_checkpoint(destination):
        raise TwinsError(
            f"{destination} is a training checkpoint, which weights would replace: choose "
            "another destination (or delete it first, if it is no longer needed)",
            argument="destination",
        )
