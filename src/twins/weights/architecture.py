"""Which model a set of weights was made for, and that model with the weights in it.

Shapes give embed_dims, depths, mlp_ratios, sr_ratios, in_chans, patch_size and num_classes;
head counts and window sizes leave no trace in the weights and come from the named variant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from twins.errors import TwinsError
from twins.weights.fit import load_into_model
from twins.weights.state_dict import StateDict, head_classes

BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def infer_model_args(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments that the weights' shapes determine."""
    stages = sorted(
        {int(name.split(".")[1]) for name in tensors if name.startswith("patch_embeds.")}
    )
    if not stages or f"patch_embeds.{stages[0]}.proj.weight" not in tensors:
        raise TwinsError("the weights have no patch embedding (patch_embeds.0.proj.weight)")
    embed_dims = [int(tensors[f"patch_embeds.{i}.proj.weight"].shape[0]) for i in stages]
    first = tensors[f"patch_embeds.{stages[0]}.proj.weight"]
    depths, mlp_ratios, sr_ratios = [], [], []
    for stage, dim in zip(stages, embed_dims, strict=True):
        blocks = {
            int(m.group(2))
            for name in tensors
            if (m := BLOCK.match(name)) and int(m.group(1)) == stage
        }
        depths.append(len(blocks))
        hidden = tensors.get(f"blocks.{stage}.0.mlp.fc1.weight")
        ratio = int(hidden.shape[0]) / dim if hidden is not None else 4
        mlp_ratios.append(int(ratio) if float(ratio).is_integer() else ratio)
        reductions = [
            int(tensors[f"blocks.{stage}.{block}.attn.sr.weight"].shape[-1])
            for block in sorted(blocks)
            if f"blocks.{stage}.{block}.attn.sr.weight" in tensors
        ]
        sr_ratios.append(reductions[0] if reductions else 1)
    return {
        "embed_dims": embed_dims,
        "depths": depths,
        "mlp_ratios": mlp_ratios,
        "sr_ratios": sr_ratios,
        "in_chans": int(first.shape[1]),
        "patch_size": int(first.shape[-1]),
        "num_classes": head_classes(tensors) or 0,
    }


def model_arguments(weights: StateDict, arch: str | None = None) -> tuple[str, dict[str, Any]]:
    """(arch, kwargs) for `create_model` that rebuild the model the weights were made for."""
    metadata = weights.metadata
    name = arch or metadata.get("arch")
    if not name:
        raise TwinsError(
            "the weights do not say which model they hold; pass --arch NAME "
            "(pcpvt_small, pcpvt_base, pcpvt_large, svt_small, svt_base, svt_large)"
        )
    if metadata.get("model_args") and (arch is None or arch == metadata.get("arch")):
        kwargs = dict(metadata["model_args"])
    else:
        kwargs = infer_model_args(weights)
        if metadata.get("act_layer"):
            kwargs["act_layer"] = metadata["act_layer"]
    return name, kwargs


def model_from_weights(weights: StateDict, arch: str | None = None, **overrides: Any) -> nn.Module:
    """Build the model the weights describe (or `arch` with the weights' shapes), load them
    strictly and return it in eval mode."""
    from twins.models import create_model  # the zoo imports this package lazily too

    name, kwargs = model_arguments(weights, arch)
    kwargs.update(overrides)
    try:
        model = create_model(name, **kwargs)
    except TwinsError as error:
        raise TwinsError(f"the weights do not fit {name}: {error}") from None
    load_into_model(model, weights)
    return model.eval()
