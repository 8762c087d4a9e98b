"""What a task supplies to the one fit loop: its data sets, how samples become batches and
reach the device, its loss and its evaluation (torchvision's `references/{classification,
segmentation,detection}` show how little else differs). The loop, resume, DDP, the lock, stop
signals, logging and checkpoints are shared (`twins.train.fit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from twins.train.precision import Precision

# inputs, targets, device -> inputs and targets on the device, ready for the model
ToDevice = Callable[[Any, Any, torch.device], tuple[Any, Any]]
# model, inputs, targets -> the loss to minimise, or a dict of losses whose "loss" is it
Criterion = Callable[[nn.Module, Any, Any], "torch.Tensor | dict[str, torch.Tensor]"]


class Task:
    """Base of the tasks; each method reads the keys of the config it needs."""

    name: str = ""
    # The evaluation result best.pt follows (higher is better, in %), its name in a sentence,
    # and the results an epoch line shows (the score first).
    score: str = ""
    score_label: str = ""
    shown: tuple[str, ...] = ()

    def datasets(self, config: Any) -> tuple[Dataset, Dataset, list[str]]:
        """(training set, validation set, class names) of `config.data_url`."""
        raise NotImplementedError

    def model_arguments(self, config: Any) -> dict[str, Any]:
        """`create_model` arguments the task's data pipeline sets (over `model_args`): a
        detector's input scale and padding, its resize left to the pipeline."""
        return {}

    def collate(self, train: bool) -> Callable[[list[tuple]], Any]:
        """Readable samples (tuples) -> one batch."""
        raise NotImplementedError

    def to_device(self, config: Any) -> ToDevice:
        raise NotImplementedError

    def metadata(self, config: Any, train_set: Dataset) -> dict[str, Any]:
        """What the task's checkpoints say over the model's metadata (`twins.weights.metadata`):
        a dense task's "preprocessing" and "dataset" (palette, category ids)."""
        return {}

    def batch_mix(self, config: Any) -> Callable | None:
        """A whole-batch augmentation run on the device after `to_device` (Mixup), or None."""
        return None

    def criterion(self, config: Any) -> Criterion:
        raise NotImplementedError

    def evaluate(
        self,
        models: dict[str, nn.Module],
        loader: Any,
        precision: Precision,
        *,
        progress: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Each model's validation metrics over every process's shard, in one pass."""
        raise NotImplementedError
