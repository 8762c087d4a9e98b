"""The model zoo: the six variants as a table, their aliases, and `create_model`.

Variant settings are those of the official code (Meituan-AutoML/Twins, `gvt.py`); parameter
counts at 1000 classes are checked by the tests against the official figures.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from typing import Any

from twins.errors import TwinsError
from twins.models.twins import ACT_LAYERS, Twins

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
HUB_WEIGHTS = {name: f"timm/twins_{name}.in1k" for name in VARIANTS}

OVERRIDES = (
    "embed_dims",
    "num_heads",
    "mlp_ratios",
    "depths",
    "sr_ratios",
    "wss",
    "in_chans",
    "patch_size",
    "drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "act_layer",
)


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


def create_model(
    name: str,
    pretrained: str | os.PathLike | bool | None = None,
    num_classes: int = 1000,
    **overrides: Any,
) -> Twins:
    """Build a Twins variant.

    name: a variant (`list_models()`) or an alias (`pcpvt_small_v0`, `alt_gvt_small`,
        `twins_svt_small`, ...).
    pretrained: a weights file in any format `twins.load_weights` reads, or True for the
        published ImageNet-1k weights (downloaded from the Hugging Face hub). A head whose
        class count differs from `num_classes` is left freshly initialised. Weights trained
        with the tanh GELU (the seed's MindSpore checkpoints) select `act_layer="gelu_tanh"`
        unless `act_layer` is given.
    overrides: the official constructor's argument names (`OVERRIDES`).
    """
    arch = resolve_name(name)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TwinsError(
            f"unknown model argument(s) {', '.join(unknown)}: valid ones are {', '.join(OVERRIDES)}"
        )
    if "act_layer" in overrides and overrides["act_layer"] not in ACT_LAYERS:
        raise TwinsError(
            f"act_layer {overrides['act_layer']!r} is unknown: use one of {', '.join(ACT_LAYERS)}"
        )
    state_dict = None
    if pretrained:
        state_dict = _pretrained_state_dict(arch, pretrained)
        act_layer = getattr(state_dict, "metadata", {}).get("act_layer")
        if act_layer and "act_layer" not in overrides:
            overrides["act_layer"] = act_layer
    try:
        model = Twins(**{**VARIANTS[arch], **overrides}, num_classes=num_classes, arch=arch)
    except (ValueError, TypeError) as error:
        raise TwinsError(f"cannot build {arch} with {overrides}: {error}") from None
    if state_dict is not None:
        from twins.weights import load_into_model

        load_into_model(model, state_dict, drop_mismatched_head=True)
    return model


# twins.weights imports the models package: import it where it is used.


def _pretrained_state_dict(arch: str, pretrained: str | os.PathLike | bool) -> dict:
    from twins.weights import load_weights

    path = _download_hub_weights(arch) if pretrained is True else pretrained
    return load_weights(path, arch=arch)  # arch tells PCPVT from SVT where a .ckpt cannot


def _download_hub_weights(arch: str) -> str:
    """Path of the published weights, fetched once into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(HUB_WEIGHTS[arch], "model.safetensors")
    except Exception as error:  # network, proxy or hub errors all end the same way
        raise TwinsError(
            f"cannot download the {arch} weights from {HUB_WEIGHTS[arch]} ({error}): "
            "download model.safetensors by hand and pass its path as pretrained"
        ) from None
