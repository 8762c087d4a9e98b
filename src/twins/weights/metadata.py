"""The one description of a model that every weights file the toolkit writes carries.

`model_metadata(model, class_names, preprocessing)` makes it; it goes into safetensors metadata,
`.pth` files (beside the tensors, see `torch_pth`), ONNX `metadata_props`, `.pt2` extra files
and the `meta` of training checkpoints, and `twins.load_weights(...).metadata` gives it back.
Formats that store strings only hold each key as JSON (`to_strings` / `from_strings`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from torch import nn

from twins.preprocessing import eval_preprocessing
from twins.weights.state_dict import METADATA_KEYS

# Config keys `eval_preprocessing` reads.
PREPROCESSING_CONFIG_KEYS = ("image_size", "crop_pct", "interpolation")


def model_metadata(
    model: nn.Module,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """{"arch", "model_args", "num_classes", "act_layer", "class_names", "preprocessing",
    "task"} of a model over a Twins backbone; a training checkpoint's task and preprocessing
    are its task's (`twins.train.task.Task.metadata`; a classifier's preprocessing is
    `twins.preprocessing.eval_preprocessing(config)`)."""
    model_args = dict(getattr(model, "model_args", None) or {})
    return {
        "arch": getattr(model, "arch", None),
        "model_args": model_args,
        "num_classes": getattr(model, "num_classes", model_args.get("num_classes")),
        "act_layer": model_args.get("act_layer"),
        "class_names": None if class_names is None else list(class_names),
        "preprocessing": None if preprocessing is None else dict(preprocessing),
        "task": getattr(model, "task", None),  # what the model says it does
    }


def preprocessing_of_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """`eval_preprocessing` of a training config stored as a dict (None when it lacks the keys).

    A config older than the `semantics` key was evaluated with a centre crop, which is what
    any semantics but "seed" gives.
    """
    if any(config.get(key) is None for key in PREPROCESSING_CONFIG_KEYS):
        return None
    semantics = config.get("semantics") or "twins"
    return eval_preprocessing(SimpleNamespace(**{**config, "semantics": semantics}))


def to_strings(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Each metadata key that has a value, as JSON text."""
    return {
        key: json.dumps(metadata[key]) for key in METADATA_KEYS if metadata.get(key) is not None
    }


def from_strings(strings: Mapping[str, str] | None) -> dict[str, Any]:
    """The metadata keys of a string map; a value that is not JSON (written by another tool) is
    kept as the string it is."""
    metadata: dict[str, Any] = {}
    for key in METADATA_KEYS:
        if key not in (strings or {}):
            continue
        try:
            metadata[key] = json.loads(strings[key])
        except json.JSONDecodeError:
            metadata[key] = strings[key]
    return metadata
