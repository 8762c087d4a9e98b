"""The Twins classifier a set of weights was made for, built and with the weights in it
(`twins.tasks.load_model`: any model a file describes).

The architecture comes from the weights' metadata (`arch`, `model_args`) or, for files that
carry none, from the named variant with the shapes the tensors give: embed_dims, depths,
mlp_ratios, sr_ratios, in_chans, patch_size and num_classes. Head counts and window sizes leave
no trace in the weights: they come from `model_args`, else from the variant. Every name, shape
and dtype is checked against the model built on the meta device (no memory) before the real
model is built, so a small file that implies a huge model is refused at no cost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from twins.errors import TwinsError
from twins.models.registry import VARIANTS, create_model, pretrained_cfg, resolve_name
from twins.models.twins import Twins
from twins.notes import note
from twins.weights import load_into_model, mismatches
from twins.weights.state_dict import head_classes

BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")
# Constructor arguments with one entry per stage that the weights cannot tell.
UNSEEN_PER_STAGE = ("num_heads", "wss")


def infer_model_args(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments that the weights' shapes determine."""
    stages = sorted(
        {int(name.split(".")[1]) for name in tensors if name.startswith("patch_embeds.")}
    )
    embeddings = [tensors.get(f"patch_embeds.{i}.proj.weight") for i in stages]
    if not stages or any(weight is None or weight.dim() != 4 for weight in embeddings):
        raise TwinsError(
            "the weights have no patch embedding convolutions (patch_embeds.<i>.proj.weight, "
            "4-d): they do not hold a Twins model"
        )
    embed_dims = [int(weight.shape[0]) for weight in embeddings]
    depths, mlp_ratios, sr_ratios = [], [], []
    for stage, dim in zip(stages, embed_dims, strict=True):
        blocks = {
            int(m.group(2))
            for name in tensors
            if (m := BLOCK.match(name)) and int(m.group(1)) == stage
        }
        depths.append(len(blocks))
        hidden = tensors.get(f"blocks.{stage}.0.mlp.fc1.weight")
        ratio = int(hidden.shape[0]) / dim if hidden is not None and dim else 4
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
        "in_chans": int(embeddings[0].shape[1]),
        "patch_size": int(embeddings[0].shape[-1]),
        "num_classes": head_classes(tensors) or 0,
    }


def model_arguments(
    weights: Mapping[str, torch.Tensor],
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(arch, kwargs) for `create_model` that rebuild the model the weights were made for.

    `weights`: a `twins.load_weights` result (its `.metadata` is used) or any state dict.

    `arch` names the variant where the file does not (or overrules it); `model_args` are
    constructor arguments that win over what the file says or its shapes tell (num_heads and
    wss of a model with custom widths, for files without metadata).
    """
    name, kwargs, unseen, _ = _arguments(weights, arch, model_args)
    if unseen is not None:
        raise unseen
    return name, kwargs


def model_from_weights(
    weights: Mapping[str, torch.Tensor],
    arch: str | None = None,
    *,
    model_args: Mapping[str, Any] | None = None,
) -> Twins:
    """Build the model the weights describe (see `model_arguments`), check the weights against
    it before allocating it, load them strictly and return it in eval mode."""
    name, kwargs, unseen, defaulted = _arguments(weights, arch, model_args)
    argument = "model_args" if model_args else "arch"
    # Whether the weights fit at all is judged first: head counts and windows change no shape.
    stages = len(kwargs["embed_dims"])
    windowed = kwargs.get("wss", VARIANTS[resolve_name(name)].get("wss")) is not None
    placeholders = {"num_heads": [1] * stages, "wss": [7] * stages if windowed else None}
    skeleton_kwargs = kwargs if unseen is None else {**kwargs, **placeholders}
    try:
        with torch.device("meta"):
            skeleton = create_model(name, **skeleton_kwargs)
    except TwinsError as error:
        raise TwinsError(f"the weights do not fit {name}: {error}", argument=argument) from error
    problem = mismatches(skeleton, weights)
    if problem is not None:
        raise TwinsError(
            f"the weights do not fit {name}: {problem}; build the model the file was made for "
            "(arch, model_args)",
            argument=argument,
        )
    if unseen is not None:
        raise unseen
    if defaulted:
        values = ", ".join(f"{key} {list(kwargs[key])}" for key in defaulted)
        note(
            f"the weights do not record {' or '.join(defaulted)} (no trace in the tensors): "
            f"using {resolve_name(name)}'s {values}; if the model had others, pass model_args="
            f"{{'{defaulted[0]}': [...]}} (--model-args on the command line)"
        )
    model = create_model(name, **kwargs)
    load_into_model(model, weights)
    metadata = getattr(weights, "metadata", {})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(
        model, metadata.get("preprocessing"), metadata.get("class_names")
    )
    return model.eval()


def _arguments(
    weights: Mapping[str, torch.Tensor], arch: str | None, model_args: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], TwinsError | None, list[str]]:
    """(arch, kwargs, the error to raise for arguments the weights cannot tell, or None, and
    the arguments the weights cannot tell that were set to the variant's, for a model of
    other widths than the variant's: a choice to tell the user of)."""
    metadata = getattr(weights, "metadata", {})  # a plain state dict says nothing
    name = arch or metadata.get("arch")
    if not name:
        raise TwinsError(
            "the weights do not say which model they hold; pass arch "
            f"(one of {', '.join(VARIANTS)})",
            argument="arch",
        )
    try:
        canonical = resolve_name(name)
    except TwinsError as error:
        raise TwinsError(str(error), argument="arch") from error
    described = (
        isinstance(metadata.get("model_args"), Mapping)
        and bool(metadata["model_args"])
        and (arch is None or _same_variant(arch, metadata.get("arch")))
    )
    if described:
        kwargs = dict(metadata["model_args"])
    else:
        kwargs = infer_model_args(weights)
        if metadata.get("act_layer"):
            kwargs["act_layer"] = metadata["act_layer"]
    kwargs.update(model_args or {})
    if described:
        return name, kwargs, None, []
    unseen = _unseen_arguments(canonical, kwargs)
    defaulted = []
    if list(kwargs["embed_dims"]) != list(VARIANTS[canonical]["embed_dims"]):
        for key in UNSEEN_PER_STAGE:
            if key not in kwargs and VARIANTS[canonical].get(key) is not None:
                kwargs[key] = list(VARIANTS[canonical][key])
                defaulted.append(key)
    return name, kwargs, unseen, defaulted


def _same_variant(arch: str, described: str | None) -> bool:
    try:
        return described is not None and resolve_name(arch) == resolve_name(described)
    except TwinsError:  # the file names a model this toolkit does not know
        return False


def _unseen_arguments(arch: str, kwargs: dict[str, Any]) -> TwinsError | None:
    """Head counts and window sizes come from the variant where not given: the error that says
    which argument to pass when the variant's do not fit the shapes of the weights."""
    dims = kwargs["embed_dims"]
    for key in UNSEEN_PER_STAGE:
        value = kwargs.get(key, VARIANTS[arch].get(key))
        if value is None or key in kwargs:
            continue
        values = list(value)
        fits = len(values) == len(dims)
        if fits and key == "num_heads":
            fits = all(heads and dim % heads == 0 for dim, heads in zip(dims, values, strict=True))
        if not fits:
            return TwinsError(
                f"the weights have embed_dims {dims}, which {arch}'s {key} {values} do not fit, "
                f"and {key} leaves no trace in weights: pass model_args={{'{key}': [...]}} with "
                f"one entry per stage (the model's training config has them)",
                argument="model_args",
            )
    return None
