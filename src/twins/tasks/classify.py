"""Image classification: ImageFolder or packed data, the seed's transforms (uint8 tensors
finished on the device), Mixup/CutMix, label-smoothed cross entropy, top-1/top-5."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from twins.data import build_datasets, build_device_batch, build_mixup
from twins.data.loader import stack_by_value
from twins.tasks.base import Criterion, Task, ToDevice
from twins.train.engine import evaluate_models
from twins.train.loss import build_loss
from twins.train.precision import Precision


class ClassifyTask(Task):
    name = "classify"
    score = "top1"
    score_label = "top-1"
    shown = ("top1", "top5", "loss")

    def datasets(self, config: Any) -> tuple[Any, Any, list[str]]:
        return build_datasets(config)

    def collate(self, train: bool) -> Any:
        # Training batches (uint8) leave the loader's workers by value, the cheaper hand-over.
        return stack_by_value if train else default_collate

    def to_device(self, config: Any) -> ToDevice:
        device_batch = build_device_batch(config)

        def to_device(inputs: Any, targets: torch.Tensor, device: torch.device) -> tuple:
            return device_batch(inputs, device), targets.to(device, non_blocking=True)

        return to_device

    def batch_mix(self, config: Any) -> Any:
        return build_mixup(config)

    def criterion(self, config: Any) -> Criterion:
        loss = build_loss(config)

        def criterion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor):
            return loss(model(images), targets)

        return criterion

    def evaluate(
        self, models: dict[str, nn.Module], loader: Any, precision: Precision, *, progress=False
    ) -> dict[str, dict[str, Any]]:
        return evaluate_models(models, loader, precision, progress=progress)
