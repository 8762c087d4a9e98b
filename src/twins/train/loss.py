"""The training loss: cross entropy against class indices or soft targets, with the label
smoothing of each semantics.

Soft targets (N x K, from Mixup/CutMix with the smoothing folded in) take soft-target cross
entropy under every semantics. Class indices take the smoothing of `label_smoothing` = eps:
the seed's `CrossEntropySmooth` puts 1 - eps on the true class and eps / (K - 1) on each other
one; torch's (and timm's, the official code's) puts 1 - eps + eps / K and eps / K.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

# model, inputs, targets -> the loss to minimise, or a dict of losses whose "loss" is it
Criterion = Callable[[nn.Module, Any, Any], "torch.Tensor | dict[str, torch.Tensor]"]


class TrainingLoss(nn.Module):
    def __init__(self, label_smoothing: float, seed_smoothing: bool) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.seed_smoothing = seed_smoothing
        self.soft_target = SoftTargetCrossEntropy()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():  # soft targets
            return self.soft_target(logits, targets)
        classes = logits.shape[-1]
        if not self.seed_smoothing or not self.label_smoothing or classes < 2:
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        soft = torch.full(logits.shape, self.label_smoothing / (classes - 1), device=logits.device)
        soft.scatter_(1, targets[:, None], 1.0 - self.label_smoothing)
        return self.soft_target(logits, soft)


def build_loss(config: Any) -> TrainingLoss:
    """`config` is a TrainConfig."""
    return TrainingLoss(config.label_smoothing, seed_smoothing=config.semantics == "seed")


def logits_criterion(config: Any) -> Criterion:
    """The criterion of a model whose output is logits: `build_loss` of them against the
    targets (a Trainer's default; each task gives its own, `twins.train.task.Task.criterion`)."""
    loss = build_loss(config)

    def criterion(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(model(inputs), targets)

    return criterion
