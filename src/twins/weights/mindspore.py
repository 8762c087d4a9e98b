"""The seed's MindSpore `.ckpt` files in the official layout: the network's tensors read from a
training checkpoint (optimiser state skipped) and written as MindSpore's `load_checkpoint`
reads them into the seed's network.

`mindspore_proto` reads and writes the protobuf stream, `mindspore_layout` renames and
splits/joins the tensors. A file this toolkit writes also carries the model's description
(`twins.weights.metadata`) as JSON in one string entry, `twins_metadata`, an entry of the kind
MindSpore's own `save_checkpoint(append_dict=...)` writes and `load_checkpoint` returns as a
str beside the parameters (`load_param_into_net` leaves it alone). A file without it, such as
the seed's, holds what MindSpore trained: its GELU is the tanh approximation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from twins.errors import TwinsError
from twins.weights.mindspore_layout import (
    family_of_arch,
    from_mindspore,
    network_name,
    to_mindspore,
)
from twins.weights.mindspore_proto import read_checkpoint, write_tags
from twins.weights.state_dict import METADATA_KEYS, StateDict

# MindSpore's nn.GELU is the tanh approximation; weights trained with it say so.
MINDSPORE_ACT_LAYER = "gelu_tanh"
# The string entry holding the metadata of files this toolkit writes.
METADATA_TAG = "twins_metadata"
# What a file written from weights that do not say is read as: the default of every reader
# but MindSpore's (official, timm and this toolkit's models use the exact GELU).
DEFAULT_ACT_LAYER = "gelu"


def read_mindspore(path: str | os.PathLike, arch: str | None = None) -> StateDict:
    """The network of a MindSpore checkpoint in the official layout, with the metadata the file
    carries (the seed's files carry none: MindSpore's tanh GELU). `arch` tells PCPVT from SVT
    where the file cannot (no stage with spatial reduction and no metadata)."""
    tags, strings = read_checkpoint(path, keep=lambda tag: network_name(tag) is not None)
    described = _metadata(strings.get(METADATA_TAG), path)
    named = described.get("arch")
    family = family_of_arch(named if isinstance(named, str) else None) or family_of_arch(arch)
    tensors = from_mindspore(tags, family=family)
    metadata = {"format": "mindspore", "act_layer": MINDSPORE_ACT_LAYER, **described}
    return StateDict(tensors, metadata)


def write_mindspore(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Official-layout tensors in the seed's layout (`model.` prefix, gamma/beta, separate
    q/k/v), with `metadata` in the `twins_metadata` entry; its act_layer, when it has none, is
    the exact GELU that every reader but MindSpore's assumes.

    The seed's layout holds a classifier's network only (`TWINS_MODULES`): weights with other
    modules (a segmenter's or a detector's heads, its trunk under `backbone.`) are refused
    before anything is written, since nothing could read them back from it."""
    metadata = metadata or {}
    outside = [name for name in tensors if network_name(name) is None]
    if outside:
        what = metadata.get("arch") or "these weights"
        raise TwinsError(
            f"{path}: a MindSpore .ckpt holds Twins classifiers only (the seed's network), not "
            f"{what} ({outside[0]} has no place in it): write .safetensors or .pth instead",
            argument="destination",
        )
    described = {key: metadata[key] for key in METADATA_KEYS if metadata.get(key) is not None}
    described.setdefault("act_layer", DEFAULT_ACT_LAYER)
    write_tags(to_mindspore(tensors), path, strings={METADATA_TAG: json.dumps(described)})


def _metadata(text: str | None, path: str | os.PathLike) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        written = json.loads(text)
    except json.JSONDecodeError:
        written = None
    if not isinstance(written, dict):
        raise TwinsError(
            f"{path}: its {METADATA_TAG} entry is not the JSON object this toolkit writes; the "
            "file is damaged: convert it again from its source"
        )
    return {key: written[key] for key in METADATA_KEYS if written.get(key) is not None}
