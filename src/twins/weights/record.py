"""What a training checkpoint says of the run that made it, beyond its model: the resolved
config (data set, recipe and its semantics), the last epoch's evaluation, the best score and
which weights scored it, the data counts. A model card (`twins.export.model_card`) is written
from it."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import Any

from twins.weights.locate import local_weights_file
from twins.weights.torch_pth import TRAINING_CHECKPOINT, load_torch_object

# The plain (tensor-free) entries of a training checkpoint (`twins.train.resume`) that describe
# its run.
RECORD_KEYS = (
    "config",
    "metrics",
    "epoch",
    "global_step",
    "best_score",
    "best_weights",
    "data_counts",
)


def training_record(path: str | os.PathLike) -> dict[str, Any]:
    """The run `path` (a weights file, id or URL) records, if it is one of our training
    checkpoints; an empty dict for any other weights."""
    local = local_weights_file(path)
    if not local.is_file() or not zipfile.is_zipfile(local):
        return {}
    checkpoint = load_torch_object(local, mmap=True)  # tensors left unread
    if not isinstance(checkpoint, Mapping) or checkpoint.get("format") != TRAINING_CHECKPOINT:
        return {}
    return {key: checkpoint[key] for key in RECORD_KEYS if checkpoint.get(key) is not None}
