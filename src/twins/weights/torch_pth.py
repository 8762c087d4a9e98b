"""PyTorch weights files: the official Twins release, timm, DeiT-style and our training checkpoints.

Accepted shapes of the loaded object (always `torch.load(..., weights_only=True)`):
- a bare state dict (official release, timm hub weights);
- a wrapper with the state dict under `model` / `state_dict` (official/DeiT and timm training
  checkpoints), EMA weights under `model_ema` / `state_dict_ema`;
- our training checkpoint `{"format": "twins-checkpoint", "model", "model_ema", "meta", "config",
  ...}`: its metadata is `meta`, with the preprocessing derived from `config` when `meta` has none.
`module.` (DistributedDataParallel) and `_orig_mod.` (torch.compile) prefixes are removed.

Written files are bare state dicts, as the official release is, so `load_state_dict(torch.load(f))`
takes them directly; the metadata rides along as an attribute of the state dict (an
`OrderedDict`, whose attributes `torch.load(weights_only=True)` restores, as it restores the
`_metadata` attribute of every `Module.state_dict()`).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from twins.atomic import save_torch
from twins.errors import TwinsError
from twins.weights.metadata import preprocessing_of_config
from twins.weights.state_dict import METADATA_KEYS, StateDict

TRAINING_CHECKPOINT = "twins-checkpoint"
RAW_KEYS = ("model", "state_dict")
EMA_KEYS = ("model_ema", "state_dict_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The attribute of a written state dict that holds its metadata.
METADATA_ATTRIBUTE = "twins_metadata"


def strip_wrapper_prefixes(name: str) -> str:
    """`module._orig_mod.blocks.0...` -> `blocks.0...`."""
    while name.startswith(WRAPPER_PREFIXES):
        for prefix in WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
    return name


def load_torch_object(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """The one `torch.load` of the toolkit (weights files, training checkpoints, resuming): with
    `weights_only=True`, tensors on the CPU (`mmap`: memory-mapped, left unread until used), and
    one `TwinsError` for any file it cannot read. argparse.Namespace is allowed because official
    (DeiT) and timm training checkpoints store their arguments as one, and it holds plain values
    only."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise TwinsError(
            f"{path}: refused, it holds Python objects ({_unsupported(error)}) that loading "
            "would build or run, not only tensors and plain values; use a file of weights only, "
            "e.g. torch.save(model.state_dict(), path) from wherever the model can be built"
        ) from error
    except Exception as error:  # any failure to unpickle a user's file is a bad file, not a bug
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TwinsError(
            f"{path}: cannot be read as a PyTorch weights file ({reason}); it may be truncated, "
            "or hold Python objects other than tensors and plain values"
        ) from error


def _unsupported(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused ("GLOBAL posix.system"), without the rest of
    its message, which advises loading the file with weights_only=False: never to be followed
    for a file from elsewhere."""
    found = re.search(r"(GLOBAL [\w.]+)", str(error))
    return found.group(1) if found else "not a plain value"


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is one of our training checkpoints (read memory-mapped: tensors untouched)."""
    if not zipfile.is_zipfile(path):
        return False  # torch.save has written zip archives since torch 1.6, as training does
    try:
        checkpoint = load_torch_object(path, mmap=True)
    except TwinsError:  # unreadable as a checkpoint: not one
        return False
    return isinstance(checkpoint, Mapping) and checkpoint.get("format") == TRAINING_CHECKPOINT


def _choose(checkpoint: Mapping[str, Any], ema: bool | None, path: str | os.PathLike) -> Mapping:
    raw_key = next((key for key in RAW_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
    ema_key = next((key for key in EMA_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
    if ema:
        if ema_key is None:
            raise TwinsError(
                f"{path}: holds no EMA weights (model_ema); load it with ema=False", argument="ema"
            )
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
        metadata = training_metadata(checkpoint)
    elif isinstance(getattr(checkpoint, METADATA_ATTRIBUTE, None), Mapping):
        written = getattr(checkpoint, METADATA_ATTRIBUTE)
        metadata.update(
            {key: written[key] for key in METADATA_KEYS if written.get(key) is not None}
        )
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


def training_metadata(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of one of our training checkpoints: its `meta`, with the preprocessing of
    its `config` where `meta` has none (checkpoints written before `meta` held it)."""
    meta = checkpoint.get("meta") or {}
    metadata: dict[str, Any] = {"format": TRAINING_CHECKPOINT}
    metadata.update({key: meta[key] for key in METADATA_KEYS if meta.get(key) is not None})
    if metadata.get("preprocessing") is None and isinstance(checkpoint.get("config"), Mapping):
        preprocessing = preprocessing_of_config(checkpoint["config"])
        if preprocessing is not None:
            metadata["preprocessing"] = preprocessing
    return metadata


def write_torch(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """A bare state dict, the official release's format (what `load_state_dict` takes directly),
    carrying `metadata` (JSON types) as its `twins_metadata` attribute."""
    plain = OrderedDict(
        (name, tensor.detach().cpu().contiguous()) for name, tensor in tensors.items()
    )
    described = {
        key: metadata[key] for key in METADATA_KEYS if (metadata or {}).get(key) is not None
    }
    if described:
        setattr(plain, METADATA_ATTRIBUTE, described)
    save_torch(plain, path)
