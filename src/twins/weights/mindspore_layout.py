"""Parameter names of the seed's MindSpore Twins <-> the official PyTorch layout.

The seed wraps the network in `NetWithLoss` (prefix `model.`), names LayerNorm parameters
`gamma` / `beta`, and has separate `q`, `k`, `v` dense layers where the official code has `q` +
`kv` (global sub-sampled attention, GSA) or one `qkv` (locally-grouped attention, LSA). Dense
and convolution weights have PyTorch's (out, in, ...) order, so no transposes are needed.
This is the reverse of the seed's `pth2ckpt` notebook, plus the training wrapper's prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from twins.errors import TwinsError

NETWORK_PREFIX = "model."
# Top-level modules of a Twins network; anything else in a training checkpoint is optimiser or
# loss-scale state (`adam_m.*`, `adam_v.*`, `global_step`, `learning_rate`, `scale_sense`, ...).
TWINS_MODULES = ("patch_embeds", "blocks", "pos_block", "norm", "head")
LAYER_NORM = re.compile(r"(^|\.)norm\d*$")
BLOCK_ATTENTION = re.compile(r"^blocks\.(\d+)\.(\d+)\.attn$")


def network_name(tag: str) -> str | None:
    """The parameter name inside the network for a checkpoint tag, None for non-network state."""
    name = tag.removeprefix(NETWORK_PREFIX)
    return name if name.split(".", 1)[0] in TWINS_MODULES else None


def family_of(names: set[str]) -> str | None:
    """The family, "svt" or "pcpvt", from where spatial-reduction convolutions sit (None: unknown).

    SVT's first block of each stage is LSA (never `attn.sr`) and its second GSA (with `attn.sr`
    when the stage's sr_ratio > 1); every PCPVT block is GSA.
    """
    for stage in range(len({name.split(".")[1] for name in names if name.startswith("blocks.")})):
        first = f"blocks.{stage}.0.attn.sr.weight" in names
        second = f"blocks.{stage}.1.attn.sr.weight" in names
        if first:
            return "pcpvt"
        if second:
            return "svt"
    return None


def family_of_arch(arch: str | None) -> str | None:
    if arch is None:
        return None
    name = arch.lower()
    if "svt" in name or "gvt" in name:
        return "svt"
    return "pcpvt" if "pcpvt" in name else None


def from_mindspore(
    tensors: Mapping[str, torch.Tensor], family: str | None = None
) -> dict[str, torch.Tensor]:
    """Network tensors of a seed checkpoint, renamed and fused into the official layout.

    `family` ("pcpvt" / "svt") is needed only when the file cannot tell, i.e. no stage has
    spatial reduction.
    """
    renamed: dict[str, torch.Tensor] = {}
    for tag, tensor in tensors.items():
        name = network_name(tag)
        if name is None:
            continue
        module, _, kind = name.rpartition(".")
        if LAYER_NORM.search(module):
            kind = {"gamma": "weight", "beta": "bias"}.get(kind, kind)
        renamed[f"{module}.{kind}"] = tensor

    family = family_of(set(renamed)) or family
    official: dict[str, torch.Tensor] = {}
    for name, tensor in renamed.items():
        module, _, kind = name.rpartition(".")
        attention, _, layer = module.rpartition(".")
        match = BLOCK_ATTENTION.match(attention)
        if match is None or layer not in ("q", "k", "v"):
            official[name] = tensor
            continue
        if layer != "q":
            continue  # joined when its `q` comes by
        parts = [renamed.get(f"{attention}.{part}.{kind}") for part in ("q", "k", "v")]
        if any(part is None for part in parts):
            raise TwinsError(
                f"MindSpore checkpoint has {attention}.q without k and v; the file is incomplete"
            )
        if family is None:
            raise TwinsError(
                "cannot tell PCPVT from SVT in this MindSpore checkpoint (no spatial reduction); "
                "pass arch (e.g. arch='pcpvt_small' or 'svt_small')",
                argument="arch",
            )
        locally_grouped = family == "svt" and int(match.group(2)) % 2 == 0
        if locally_grouped:
            official[f"{attention}.qkv.{kind}"] = torch.cat(parts, dim=0)
        else:
            official[f"{attention}.q.{kind}"] = parts[0]
            official[f"{attention}.kv.{kind}"] = torch.cat(parts[1:], dim=0)
    return official


def to_mindspore(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-layout tensors renamed and split as the seed's MindSpore training cell holds them."""
    tags: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        module, _, kind = name.rpartition(".")
        attention, _, layer = module.rpartition(".")
        if BLOCK_ATTENTION.match(attention) and layer in ("qkv", "kv"):
            layers = ("q", "k", "v") if layer == "qkv" else ("k", "v")
            if tensor.shape[0] % len(layers):
                raise TwinsError(
                    f"{name}: {tuple(tensor.shape)} does not split into {'/'.join(layers)}"
                )
            for part, chunk in zip(layers, tensor.chunk(len(layers), dim=0), strict=True):
                tags[f"{NETWORK_PREFIX}{attention}.{part}.{kind}"] = chunk.contiguous()
            continue
        if LAYER_NORM.search(module):
            kind = {"weight": "gamma", "bias": "beta"}.get(kind, kind)
        tags[f"{NETWORK_PREFIX}{module}.{kind}"] = tensor
    return tags
