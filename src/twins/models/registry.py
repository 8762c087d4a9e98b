"""The model zoo: the six variants as a table, their aliases, and `create_model`.

Variant settings are those of the official code (Meituan-AutoML/Twins, `gvt.py`); parameter
counts at 1000 classes are checked by the tests against the official figures.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from twins.errors import TwinsError
from twins.models.arguments import STAGE_ARGS
from twins.models.pretrained import pretrained_file
from twins.models.twins import Twins, smallest_side
from twins.notes import note

_PCPVT = {
    "embed_dims": (64, 128, 320, 512),
    "num_heads": (1, 2, 5, 8),
    "mlp_ratios": (8, 8, 4, 4),
    "sr_ratios": (8, 4, 2, 1),
}
_SVT = {"mlp_ratios": (4, 4, 4, 4), "sr_ratios": (8, 4, 2, 1), "wss": (7, 7, 7, 7)}

VARIANTS: dict[str, dict[str, Any]] = {
    "pcpvt_small": {**_PCPVT, "depths": (3, 4, 6, 3)},
    "pcpvt_base": {**_PCPVT, "depths": (3, 4, 18, 3)},
    "pcpvt_large": {**_PCPVT, "depths": (3, 8, 27, 3)},
    "svt_small": {
        **_SVT,
        "embed_dims": (64, 128, 256, 512),
        "num_heads": (2, 4, 8, 16),
        "depths": (2, 2, 10, 4),
    },
    "svt_base": {
        **_SVT,
        "embed_dims": (96, 192, 384, 768),
        "num_heads": (3, 6, 12, 24),
        "depths": (2, 2, 18, 2),
    },
    "svt_large": {
        **_SVT,
        "embed_dims": (128, 256, 512, 1024),
        "num_heads": (4, 8, 16, 32),
        "depths": (2, 2, 18, 2),
    },
}

# Names of the official code (and the seed) and of timm, accepted wherever a name is.
ALIASES: dict[str, str] = {
    **{f"{name}_v0": name for name in ("pcpvt_small", "pcpvt_base", "pcpvt_large")},
    **{f"alt_gvt_{size}": f"svt_{size}" for size in ("small", "base", "large")},
    **{f"twins_{name}": name for name in VARIANTS},
}

# timm's published ImageNet-1k weights (official weights, timm's layout is the official one).
# The official constructor's argument names, and timm's where the official code has none.
OVERRIDES = (
    *STAGE_ARGS,
    "in_chans",
    "patch_size",
    "drop_rate",
    "pos_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "act_layer",
    "global_pool",
)
# Arguments that say how to build and run the model, not what it is (not kept in model_args).
BUILD_OPTIONS = ("fast_path", "device", "dtype", "img_size")
# The recorded `model_args` of a pretrained file that `create_model` takes where the caller
# gives none: what the weights were made for (the rates are the caller's training choice).
RECORDED_SHAPE = (*STAGE_ARGS, "in_chans", "patch_size", "act_layer")

# timm's pretrained config of its Twins models (the published weights' preprocessing), so that
# timm's data helpers (`timm.data.resolve_data_config(model=model)`) treat ours alike.
PRETRAINED_CFG = {
    "input_size": (3, 224, 224),
    "crop_pct": 0.9,
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "first_conv": "patch_embeds.0.proj",
    "classifier": "head",
    "num_classes": 1000,
    "pool_size": None,
    "fixed_input_size": False,
    "license": "apache-2.0",
}


def list_models(pattern: str | None = None) -> list[str]:
    """Canonical variant names, optionally filtered by a shell-style pattern (`"svt_*"`)."""
    names = list(VARIANTS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def aliases_of(name: str) -> list[str]:
    return [alias for alias, target in ALIASES.items() if target == name]


def resolve_name(name: str) -> str:
    """Canonical name for a variant name or alias; a clear error with close matches if unknown."""
    key = name.strip().lower()
    if key in VARIANTS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    close = difflib.get_close_matches(key, [*VARIANTS, *ALIASES], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise TwinsError(f"unknown model {name!r}: {hint}choose one of {', '.join(VARIANTS)}")


def smallest_image_size(name: str, model_args: dict[str, Any] | None = None) -> int:
    """The smallest input side the variant (with `model_args` over it) takes: each stage's map
    must hold a spatial-reduction window (sr_ratio tokens across), the last stage one token."""
    settings = {**VARIANTS[resolve_name(name)], **(model_args or {})}
    depths, sr_ratios = settings["depths"], settings["sr_ratios"]
    if isinstance(sr_ratios, (int, float)):
        sr_ratios = [sr_ratios] * len(depths)
    return smallest_side(int(settings.get("patch_size", 4)), sr_ratios)


def create_model(
    name: str,
    pretrained: str | os.PathLike | bool | None = None,
    num_classes: int | None = None,
    *,
    fast_path: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    img_size: int | tuple[int, int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a Twins variant (a dense model over one: `twins.tasks.create_model`).

    name: a variant (`list_models()`) or an alias (`pcpvt_small_v0`, `alt_gvt_small`,
        `twins_svt_small`, ...).
    num_classes: the classes of the head (default 1000 for a classifier).
    pretrained: a weights file in any format `twins.load_weights` reads, or True for the
        published ImageNet-1k weights (downloaded from the Hugging Face hub). The shape the file
        records (its `model_args`: widths, heads, depths, windows, GELU, ...) is used where the
        overrides do not give it. A head whose class count differs from `num_classes` is left
        freshly initialised, and a note says so (`twins.load_model` gives back the model a file
        describes, head included). Weights trained with the tanh GELU (the seed's MindSpore
        checkpoints) select `act_layer="gelu_tanh"` unless `act_layer` is given.
    fast_path: fused CPU kernels where they apply (default: on, unless the environment says
        TWINS_FAST_PATH=0); False runs the plain layers everywhere. Same parameters either way.
    device, dtype: where and in which type the parameters are made ("meta": shapes only).
    img_size: accepted as timm's create_model passes it; Twins takes any input size.
    features_only, out_indices: timm's feature extractor (`TwinsFeatures`) instead of the
        classifier: `model(x)` is the list of stage maps (default: all four).
    overrides: the official constructor's argument names (`OVERRIDES`), and timm's
        `pos_drop_rate`, `proj_drop_rate` (default: `drop_rate`) and `global_pool`.
    """
    del img_size  # no position embedding: nothing depends on the input size
    arch = resolve_name(name)
    num_classes = 1000 if num_classes is None else num_classes
    features_only = overrides.pop("features_only", False)
    out_indices = overrides.pop("out_indices", 4)  # timm's default for Twins: all four stages
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        valid = ", ".join([*OVERRIDES, *BUILD_OPTIONS])
        raise TwinsError(
            f"unknown model argument(s) {', '.join(unknown)}: valid ones are {valid}",
            argument=unknown[0],
        )
    state_dict = None
    if pretrained:
        from twins.weights import load_weights  # loading weights is not needed to build a model

        # arch tells PCPVT from SVT where a .ckpt cannot
        state_dict = load_weights(pretrained_file(pretrained, arch, device), arch=arch)
        metadata = getattr(state_dict, "metadata", {})
        overrides = {**recorded_shape(arch, metadata, RECORDED_SHAPE), **overrides}
        if metadata.get("act_layer") and "act_layer" not in overrides:
            overrides["act_layer"] = metadata["act_layer"]
    try:
        model = Twins(
            **{**VARIANTS[arch], **overrides},
            num_classes=num_classes,
            arch=arch,
            fast_path=fast_path,
            device=device,
            dtype=dtype,
        )
    except TwinsError as error:
        raise TwinsError(f"cannot build {arch}: {error}", argument=error.argument) from error
    metadata = getattr(state_dict, "metadata", {})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(model, metadata.get("preprocessing"))
    if state_dict is not None:
        from twins.weights import load_into_model

        _note_replaced_head(state_dict, model.num_classes)
        load_into_model(model, state_dict, drop_mismatched_head=True)
    if not features_only:
        return model
    from twins.models.features import TwinsFeatures  # imports timm: only when asked for

    return TwinsFeatures(model, out_indices)


def pretrained_cfg(
    model: Twins,
    preprocessing: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """timm's pretrained config of `model`, with the preprocessing (`twins.preprocessing`) and
    class names (timm's `label_names`) its weights say they were made with."""
    cfg = {
        **PRETRAINED_CFG,
        "input_size": (model.in_chans, 224, 224),
        "architecture": model.arch,
        "num_classes": model.num_classes,
    }
    if isinstance(preprocessing, Mapping) and preprocessing:
        size = int(preprocessing.get("image_size", 224))
        cfg |= {
            "input_size": (model.in_chans, size, size),
            "crop_pct": preprocessing.get("crop_pct", cfg["crop_pct"]),
            "crop_mode": preprocessing.get("crop_mode", "center"),
            "interpolation": preprocessing.get("interpolation", cfg["interpolation"]),
            "mean": tuple(preprocessing.get("mean", cfg["mean"])),
            "std": tuple(preprocessing.get("std", cfg["std"])),
        }
    if class_names and len(class_names) == model.num_classes:
        cfg["label_names"] = tuple(class_names)
    return cfg


def recorded_shape(
    variant: str, metadata: Mapping[str, Any], keys: tuple[str, ...], names: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The shape arguments (`keys`) a pretrained file records (`model_args`) where it names
    `variant` (or one of `names`, a dense model over it); none where it records another model:
    its tensors then do not fit, and loading says so."""
    recorded, named = metadata.get("model_args"), metadata.get("arch")
    if not isinstance(recorded, Mapping):
        return {}
    if named is not None and named not in names:
        try:
            if resolve_name(str(named)) != variant:
                return {}
        except TwinsError:  # a name this toolkit does not know: not this variant
            return {}
    return {key: recorded[key] for key in keys if recorded.get(key) is not None}


def _note_replaced_head(state_dict: Mapping[str, torch.Tensor], num_classes: int) -> None:
    head = state_dict.get("head.weight")
    classes = None if head is None else int(head.shape[0])
    if classes is None or classes == num_classes:
        return
    instead = (
        f"a new {num_classes}-class head (pass num_classes={classes} to keep it, or use "
        "twins.load_model)"
        if num_classes
        else "no head, as num_classes=0 asks"
    )
    note(f"pretrained: the file's {classes}-class head dropped; {instead}")
