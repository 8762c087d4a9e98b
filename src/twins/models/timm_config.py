"""timm's `config.json` of a Twins classifier, as `timm.create_model("local-dir:DIR" or
"hf-hub:org/name", pretrained=True)` and transformers' `AutoModelForImageClassification` (its
timm wrapper) read it: `architecture` `twins_<variant>` (timm's name: the folder then builds
timm's own Twins), `num_classes`, `label_names`, the `model_args` where the model differs from
the variant, and the `pretrained_cfg` with the preprocessing the weights were evaluated with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twins.models.registry import VARIANTS, pretrained_cfg, resolve_name
from twins.models.twins import Twins
from twins.notes import note

# The constructor arguments timm's Twins takes by the same names (the rates are training's).
TIMM_MODEL_ARGS = (
    "embed_dims",
    "num_heads",
    "mlp_ratios",
    "depths",
    "sr_ratios",
    "wss",
    "in_chans",
    "patch_size",
)
# What timm's pretrained_cfg says beyond the preprocessing.
TIMM_CFG_KEYS = ("first_conv", "classifier", "fixed_input_size")
PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def timm_hub_config(model: Twins, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json of `model`, a classifier described by `metadata`."""
    variant = resolve_name(model.arch)
    args = model.model_args
    differing = {
        key: _plain(args[key])
        for key in TIMM_MODEL_ARGS
        if args.get(key) is not None and _plain(args[key]) != _plain(VARIANTS[variant].get(key))
    }
    if args.get("act_layer") == "gelu_tanh":
        note(
            f"{model.arch} uses the tanh GELU (MindSpore's), which timm's Twins does not build: "
            "timm and transformers compute exact GELU with these weights (twins.load_model "
            "keeps the tanh one)"
        )
    cfg = pretrained_cfg(model, metadata.get("preprocessing"), metadata.get("class_names"))
    described = {
        key: _plain(cfg[key]) for key in (*PREPROCESSING_KEYS, *TIMM_CFG_KEYS) if key in cfg
    }
    config: dict[str, Any] = {
        "architecture": f"twins_{variant}",
        "num_classes": model.num_classes,
        "num_features": int(args["embed_dims"][-1]),
        "global_pool": "avg",
    }
    if differing:
        config["model_args"] = differing
    if cfg.get("label_names"):
        config["label_names"] = list(cfg["label_names"])
    config["pretrained_cfg"] = {**described, "num_classes": model.num_classes, "custom_load": False}
    return config


def _plain(value: Any) -> Any:
    """Lists for tuples, as JSON writes them, so values compare as they will be read."""
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value
