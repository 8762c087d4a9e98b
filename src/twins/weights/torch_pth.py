"""PyTorch weights files: the official Twins release, timm, DeiT-style and our training checkpoints.

Accepted shapes of the loaded object (always `torch.load(..., weights_only=True)`):
- a bare state dict (official release, timm hub weights);
- a wrapper with the state dict under `model` / `state_dict` (official/DeiT and timm training
  checkpoints), EMA weights under `model_ema` / `state_dict_ema`;
- our training checkpoint `{"format": "twins-checkpoint", "model", "model_ema", "meta", ...}`.
`module.` (DistributedDataParallel) and `_orig_mod.` (torch.compile) prefixes are removed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import torch

from twins.errors import TwinsError
from twins.weights.atomic import atomic_path
from twins.weights.state_dict import METADATA_KEYS, StateDict

TRAINING_CHECKPOINT = "twins-checkpoint"
RAW_KEYS = ("model", "state_dict")
EMA_KEYS = ("model_ema", "state_dict_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Settings of a training checkpoint's config that tell how its images were prepared.
IMAGE_SETTINGS = ("image_size", "crop_pct", "interpolation")


def strip_wrapper_prefixes(name: str) -> str:
    """`module._orig_mod.blocks.0...` -> `blocks.0...`."""
    while name.startswith(WRAPPER_PREFIXES):
        for prefix in WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
    return name


def load_torch_object(path: str | os.PathLike) -> Any:
    """`torch.load` with `weights_only=True`; argparse.Namespace is allowed because official (DeiT)
    and timm training checkpoints store their arguments as one, and it holds plain values only."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to unpickle a user's file is a bad file, not a bug
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TwinsError(
            f"{path}: cannot be read as a PyTorch weights file ({reason}); it may be truncated, "
            "or hold Python objects other than tensors and plain values"
        ) from None


def _choose(checkpoint: Mapping[str, Any], ema: bool | None, path: str | os.PathLike) -> Mapping:
    raw_key = next((key for key in RAW_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
    ema_key = next((key for key in EMA_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
    if ema:
        if ema_key is None:
            raise TwinsError(f"{path}: holds no EMA weights (model_ema); load it without --ema")
        return checkpoint[ema_key]
    if raw_key is not None:
        return checkpoint[raw_key]
    if ema_key is not None and ema is None:
        return checkpoint[ema_key]
    return checkpoint


def read_torch(path: str | os.PathLike, *, ema: bool | None = None) -> StateDict:
    """Official-layout tensors of a PyTorch weights file; `ema=True` takes the EMA weights of a
    training checkpoint, `None`/`False` the raw ones."""
    checkpoint = load_torch_object(path)
    if not isinstance(checkpoint, Mapping):
        raise TwinsError(f"{path}: holds a {type(checkpoint).__name__}, not a state dict")
    metadata: dict[str, Any] = {"format": "torch"}
    if checkpoint.get("format") == TRAINING_CHECKPOINT:
        metadata["format"] = TRAINING_CHECKPOINT
        meta = checkpoint.get("meta") or {}
        metadata.update({key: meta[key] for key in METADATA_KEYS if meta.get(key) is not None})
        config = checkpoint.get("config") or {}
        metadata.update({key: config[key] for key in IMAGE_SETTINGS if config.get(key) is not None})
    elif isinstance(checkpoint.get("arch"), str):
        metadata["arch"] = checkpoint["arch"]  # timm's train.py records the model name
    chosen = _choose(checkpoint, ema, path)
    tensors = {
        strip_wrapper_prefixes(name): value
        for name, value in chosen.items()
        if isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise TwinsError(
            f"{path}: holds no tensors at the top level or under model/state_dict/model_ema "
            f"(keys: {', '.join(map(str, list(checkpoint)[:6]))})"
        )
    return StateDict(tensors, metadata)


def write_torch(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """A bare state dict, the official release's format (what `load_state_dict` takes directly)."""
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        torch.save(plain, temporary)
