"""The seed's MindSpore `.ckpt` files in the official layout: the network's tensors read from a
training checkpoint (optimiser state skipped) and written as MindSpore's `load_checkpoint`
reads them into the seed's network.

`mindspore_proto` reads and writes the protobuf stream, `mindspore_layout` renames and
splits/joins the tensors. The files hold tensors only: no metadata beyond what the format
implies (MindSpore's GELU, the tanh approximation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from twins.weights.mindspore_layout import (
    family_of_arch,
    from_mindspore,
    network_name,
    to_mindspore,
)
from twins.weights.mindspore_proto import read_tags, write_tags
from twins.weights.state_dict import StateDict

# MindSpore's nn.GELU is the tanh approximation; weights trained with it say so.
MINDSPORE_ACT_LAYER = "gelu_tanh"


def read_mindspore(path: str | os.PathLike, arch: str | None = None) -> StateDict:
    """The network of a seed MindSpore checkpoint in the official layout. `arch` tells PCPVT
    from SVT where the file cannot (no stage with spatial reduction)."""
    tags = read_tags(path, keep=lambda tag: network_name(tag) is not None)
    tensors = from_mindspore(tags, family=family_of_arch(arch))
    return StateDict(tensors, {"format": "mindspore", "act_layer": MINDSPORE_ACT_LAYER})


def write_mindspore(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Official-layout tensors in the seed's layout (`model.` prefix, gamma/beta, separate
    q/k/v)."""
    write_tags(to_mindspore(tensors), path)
