"""The Hugging Face Hub layout of a model: a folder with `config.json`, `model.safetensors` and
a `README.md` model card, ready for `hf upload` (or `huggingface_hub.upload_folder`).

`model.safetensors` holds the official / timm keys with the model's metadata
(`twins.weights.metadata`), so `twins.load_model(folder)` rebuilds the model exactly.
`config.json` is what the model's task gives (a classifier's is timm's, which timm's
`local-dir:` / `hf-hub:` loaders and transformers' `AutoModelForImageClassification` read),
else twins' own: the metadata keys (arch, model_args, class names, preprocessing, task and the
data set's palette or category ids), which `twins.weights.hub_layout` reads back.

A new folder is written whole beside its final name and renamed into place; into an existing
folder (a clone of a Hub repository) each file is replaced whole, the weights first.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from twins.atomic import write_text
from twins.errors import TwinsError
from twins.export.model_card import model_card
from twins.weights import StateDict, save_weights
from twins.weights.locate import CONFIG_FILE
from twins.weights.state_dict import METADATA_KEYS

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
# A task's config.json of a model: `(model, metadata) -> dict` (None: twins' own).
HubConfig = Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]]


def export_hub_folder(
    model: nn.Module,
    folder: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    hub_config: HubConfig | None = None,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Write `folder` in the Hub layout for `model`, described by `metadata` (the model's and
    its data set's) and, in the card, by the training `record` of its checkpoint
    (`twins.weights.record.training_record`)."""
    folder = Path(folder)
    check_hub_folder(folder)
    config = hub_config(model, metadata) if hub_config else twins_hub_config(metadata)
    files = {CONFIG_FILE: json.dumps(config, indent=2) + "\n", CARD_FILE: ""}
    files[CARD_FILE] = model_card(model, metadata, config, record or {})
    if folder.is_dir():
        save_weights(StateDict(model.state_dict(), metadata), folder / WEIGHTS_FILE)
        for name, text in files.items():
            write_text(folder / name, text)
        return folder
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_weights(StateDict(model.state_dict(), metadata), staging / WEIGHTS_FILE)
        for name, text in files.items():
            write_text(staging / name, text)
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_hub_folder(folder: Path) -> None:
    """Refuse a file, or a folder that holds other things than a Hub layout (whose README.md
    would be replaced): the layout goes into a new folder, an empty one, or one already in
    that layout (a clone of a Hub repository)."""
    if folder.exists() and not folder.is_dir():
        raise TwinsError(
            f"{folder} is a file: the Hub layout is a folder; name a new folder", argument="output"
        )
    if folder.is_dir() and any(folder.iterdir()) and not is_hub_folder(folder):
        raise TwinsError(
            f"{folder} is a folder of other files (no config.json or model.safetensors), whose "
            f"README.md the model card would replace: name a new folder, e.g. {folder / 'hf'}",
            argument="output",
        )


def is_hub_folder(folder: Path) -> bool:
    """Whether `folder` holds a Hub layout (its config or weights)."""
    return (folder / CONFIG_FILE).is_file() or (folder / WEIGHTS_FILE).is_file()


def twins_hub_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """twins' own config.json: the metadata keys that have a value."""
    return {key: metadata[key] for key in METADATA_KEYS if metadata.get(key) is not None}
