"""The Hugging Face Hub layout of a model: a folder with `model.safetensors` (or timm's older
`pytorch_model.bin`) and `config.json`, read into a `StateDict` whose metadata
(`twins.weights.metadata`) is the weights file's own, completed by what config.json says.

config.json is timm's for a classifier (`architecture` `twins_<variant>`, `num_classes`,
`label_names`, `model_args`, `pretrained_cfg` with the preprocessing), as timm and transformers
read it; for a segmenter or detector it is twins' own: the metadata keys themselves (arch,
model_args, class_names, preprocessing, task, dataset). Writing it is `twins.export.hub`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twins.errors import TwinsError
from twins.weights.locate import CONFIG_FILE, WEIGHT_FILES, hub_folder_weights
from twins.weights.safetensors_io import read_safetensors
from twins.weights.state_dict import METADATA_KEYS, StateDict
from twins.weights.torch_pth import read_torch

# timm's pretrained_cfg names -> the preprocessing's (`twins.preprocessing.eval_preprocessing`).
PREPROCESSING_OF_TIMM = ("crop_pct", "crop_mode", "interpolation", "mean", "std")


def read_hub_folder(folder: Path) -> StateDict:
    """The weights of the Hub-layout `folder`, described by their own metadata and config.json."""
    weights_file = hub_folder_weights(folder)
    if weights_file is None:
        raise TwinsError(
            f"{folder} is a folder without {' or '.join(WEIGHT_FILES)}: give a weights file "
            "(a training run keeps checkpoints/best.pt and checkpoints/last.pt) or a folder in "
            "the Hub layout (`twins export --format hf` writes one)"
        )
    if weights_file.name.endswith(".safetensors"):
        weights = read_safetensors(weights_file)
    else:
        weights = read_torch(weights_file)
    said = hub_config_metadata(folder / CONFIG_FILE)
    own = {key: value for key, value in weights.metadata.items() if value is not None}
    weights.metadata = {**said, **own}
    return weights


def hub_config_metadata(path: Path) -> dict[str, Any]:
    """The metadata a config.json gives (nothing where the folder has none)."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TwinsError(
            f"{path}: not a readable JSON file ({error}); rewrite or remove it"
        ) from error
    if not isinstance(config, Mapping):
        raise TwinsError(f"{path}: holds no JSON object; rewrite or remove it")
    if "architecture" not in config:  # twins' own: the metadata keys
        return {key: config[key] for key in METADATA_KEYS if config.get(key) is not None}
    return _timm_metadata(config)


def _timm_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"arch": config["architecture"]}
    head = {} if config.get("num_classes") is None else {"num_classes": config["num_classes"]}
    metadata.update(head)
    model_args = config.get("model_args")
    if isinstance(model_args, Mapping) and model_args:  # timm's: over the variant's, as ours
        metadata["model_args"] = {**model_args, **head}
    labels = config.get("label_names")
    if isinstance(labels, Mapping):  # timm's {index: name} where the indices have gaps
        labels = [str(labels.get(str(i), labels.get(i, i))) for i in range(config["num_classes"])]
    if labels:
        metadata["class_names"] = list(labels)
    cfg = config.get("pretrained_cfg") or {}
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        metadata["preprocessing"] = {
            "image_size": int(cfg["input_size"][-1]),
            **{key: cfg[key] for key in PREPROCESSING_OF_TIMM if cfg.get(key) is not None},
        }
    return metadata
