"""`load_weights`: any supported weights file -> official-layout `StateDict` with its metadata."""

from __future__ import annotations

import os

from twins.console import debug
from twins.errors import TwinsError
from twins.weights.formats import detect_format
from twins.weights.hub_layout import read_hub_folder
from twins.weights.locate import local_weights_file
from twins.weights.mindspore import read_mindspore
from twins.weights.mindspore_layout import network_name
from twins.weights.pt2 import read_pt2
from twins.weights.safetensors_io import read_safetensors
from twins.weights.state_dict import StateDict, head_classes
from twins.weights.torch_pth import read_torch


def load_weights(
    path: str | os.PathLike, *, ema: bool | None = None, arch: str | None = None
) -> StateDict:
    """Read official/timm `.pth`, our training checkpoints, MindSpore `.ckpt`, `.safetensors`,
    the weights of a `.pt2` program or a folder in the Hugging Face Hub layout, from a local
    path, a `hf-hub:org/name[@revision]` id or an `s3://` / `obs://` URL
    (`twins.weights.locate`).

    The format is judged from the content. `ema=True` takes a training checkpoint's EMA weights
    (raw weights otherwise). `arch` helps only where a file cannot tell PCPVT from SVT.
    `.metadata` holds what the file says of its model (`twins.weights.metadata`), `format`, and
    `num_classes` from the head. Loading never runs code from the file.
    """
    path = local_weights_file(path)
    kind = "hub folder" if path.is_dir() else detect_format(path)
    if ema and kind != "torch":
        raise TwinsError(
            f"{path}: a {kind}{'' if path.is_dir() else ' file'} holds no EMA weights; load it with ema=False",
            argument="ema",
        )
    if kind == "hub folder":
        weights = read_hub_folder(path)
    elif kind == "safetensors":
        weights = read_safetensors(path)
    elif kind == "torch":
        weights = read_torch(path, ema=ema)
    elif kind == "pt2":
        weights = read_pt2(path)
    else:
        weights = read_mindspore(path, arch)
    # A classifier's keys, or a dense model's (its Twins trunk under `backbone.`).
    if not any(network_name(name) == name or name.startswith("backbone.") for name in weights):
        raise TwinsError(
            f"{path}: holds no Twins weights (first keys: {', '.join(list(weights)[:4]) or 'none'})"
        )
    if weights.metadata.get("num_classes") is None:
        weights.metadata["num_classes"] = head_classes(weights)
    debug(
        f"read {path}: {weights.metadata.get('format', kind)}, {len(weights)} tensors, "
        f"model {weights.metadata.get('arch') or 'not named'}"
    )
    return weights


def read_stored(path: str | os.PathLike) -> StateDict | None:
    """The tensors of a local torch or safetensors file or Hub-layout folder under the names
    they are stored with (a dense model's file keeps its own layout); None for other formats."""
    path = local_weights_file(path)
    if path.is_dir():
        return read_hub_folder(path)
    kind = detect_format(path)
    if kind == "torch":
        return read_torch(path)
    return read_safetensors(path) if kind == "safetensors" else None
