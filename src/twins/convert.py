"""Convert weights between the official/timm `.pth`, the seed's MindSpore `.ckpt` and safetensors.

The source format is judged from the file's content, the destination's from its extension.
With an architecture (from the file or `arch`) the weights are first loaded into that model,
so a conversion that succeeds is known to fit, and the safetensors metadata then describes the
model fully (`arch`, `model_args`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from twins.weights import StateDict, load_weights, model_from_weights, save_weights
from twins.weights.save import format_for_path

# What each destination format keeps besides the tensors.
KEEPS_METADATA = {"safetensors": True, "torch": False, "mindspore": False}


@dataclass
class Conversion:
    source_format: str
    destination_format: str
    tensors: int
    metadata: dict = field(default_factory=dict)
    dropped_metadata: list[str] = field(default_factory=list)


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    arch: str | None = None,
    ema: bool | None = None,
) -> Conversion:
    """Read `source` (any format `load_weights` reads) and write `destination`."""
    destination_format = format_for_path(destination)
    weights = load_weights(source, ema=ema, arch=arch)
    metadata = dict(weights.metadata)
    if arch is not None or metadata.get("arch"):
        model = model_from_weights(weights, arch)
        metadata.update(
            arch=model.arch or arch,
            model_args=model.model_args,
            num_classes=model.num_classes,
            act_layer=model.model_args.get("act_layer"),
        )
    source_format = metadata.pop("format")
    written = StateDict(weights, metadata)
    save_weights(written, destination)
    described = sorted(key for key in ("arch", "act_layer", "class_names") if metadata.get(key))
    dropped = [] if KEEPS_METADATA[destination_format] else described
    return Conversion(source_format, destination_format, len(written), metadata, dropped)
