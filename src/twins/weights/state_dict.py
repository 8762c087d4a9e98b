"""`StateDict`: tensors in the official Twins layout plus what their file says about them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

# The metadata keys a weights file may carry (all optional; `twins.weights.metadata` makes them):
#   arch           canonical or alias model name, e.g. "pcpvt_small"
#   model_args     full constructor kwargs (JSON types), `create_model(arch, **model_args)`
#   num_classes    rows of the classifier head
#   act_layer      "gelu" (exact) or "gelu_tanh" (MindSpore's GELU)
#   class_names    list of label names, index order
#   preprocessing  how images are prepared for the model (`twins.preprocessing.eval_preprocessing`:
#                  image_size, crop_pct, crop_mode, interpolation, mean, std)
# Readers add `format`: which reader produced the tensors ("safetensors", "torch", ...).
# "task": what the model does (none: a classifier); "dataset": what a dense task's data set
# says beyond its class names (a palette, COCO category ids), as the task writes it.
METADATA_KEYS = ("arch", "model_args", "num_classes", "act_layer", "class_names", "preprocessing")
# "run": what made the weights, where a training run did (`twins.train.run_record`).
METADATA_KEYS += ("task", "dataset", "run")


class StateDict(dict):
    """A dict of parameter name -> tensor, with `.metadata` describing the model it belongs to."""

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(tensors)
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"StateDict({len(self)} tensors, metadata={self.metadata!r})"


def head_classes(tensors: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the classifier head, 0 when the file has no head, None when it is no Twins file."""
    head = tensors.get("head.weight")
    if head is not None:
        return int(head.shape[0])
    return 0 if "norm.weight" in tensors else None
