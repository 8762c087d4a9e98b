"""Convert weights between the official/timm `.pth`, the seed's MindSpore `.ckpt`, safetensors and
the Hugging Face Hub layout (a folder: `twins export --format hf`).

The source format is judged from the file's content, the destination's from its extension (none:
the Hub layout).
With an architecture (from the file or `arch`) the weights are first checked against that
model, so a conversion that succeeds is known to fit, and the destination's metadata then
describes the model fully (`twins.weights.metadata`: arch, model_args, class names,
preprocessing). A destination that is the source itself, or a training checkpoint, is refused,
and so is a `.ckpt` of a segmenter or a detector (the seed's layout holds classifiers only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins.errors import TwinsError
from twins.export.hub import check_hub_folder, is_hub_folder
from twins.tasks import export, model_from_weights
from twins.weights import (
    StateDict,
    check_values,
    detect_format,
    format_for_path,
    load_weights,
    local_weights_file,
    model_metadata,
    save_weights,
)
from twins.weights.save import check_destination


@dataclass
class Conversion:
    source_format: str
    destination_format: str
    tensors: int
    metadata: dict = field(default_factory=dict)


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    arch: str | None = None,
    ema: bool | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Conversion:
    """Read `source` (any format `load_weights` reads) and write `destination`.

    `arch` and `model_args` describe the model where the source does not (see
    `twins.tasks.model_from_weights`).
    """
    folder = Path(destination)
    taken = folder.is_dir() and any(folder.iterdir()) and not is_hub_folder(folder)
    if not folder.suffix and not taken:  # a folder: the Hugging Face Hub layout
        return _to_hub_folder(source, destination, arch, ema, model_args)
    if folder.is_dir():
        example = folder / f"{Path(source).stem}.safetensors"
        raise TwinsError(
            f"{destination} is a folder: name the file to write in it, e.g. {example}, or a new "
            "folder for the Hugging Face Hub layout",
            argument="destination",
        )
    destination_format = format_for_path(destination)
    check_destination(source, destination)
    weights = load_weights(source, ema=ema, arch=arch)
    metadata = dict(weights.metadata)
    source_format = metadata.pop("format")
    if arch is not None or metadata.get("arch"):
        model = model_from_weights(weights, arch, model_args=model_args)
        described = model_metadata(
            model, metadata.get("class_names"), metadata.get("preprocessing")
        )
        metadata.update({key: value for key, value in described.items() if value is not None})
    else:
        check_values(weights)  # no model to compare with: Twins weights are all float, finite
    written = StateDict(weights, metadata)
    save_weights(written, destination)
    return Conversion(source_format, destination_format.name, len(written), metadata)


def _to_hub_folder(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    arch: str | None,
    ema: bool | None,
    model_args: Mapping[str, Any] | None,
) -> Conversion:
    """`destination` written in the Hub layout (`twins export --format hf`)."""
    check_hub_folder(Path(destination))
    export(source, "hf", destination, arch=arch, ema=ema, model_args=model_args, check=False)
    local = local_weights_file(source)  # fetched by the export: its format is judged here
    source_format = "hf" if local.is_dir() else detect_format(local)
    weights = load_weights(destination)
    metadata = {key: value for key, value in weights.metadata.items() if key != "format"}
    return Conversion(source_format, "hf", len(weights), metadata)
