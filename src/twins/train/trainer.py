"""`Trainer`: one optimizer step of a config's recipe around a model.

It holds what a step needs — the optimizer (`twins.train.optim`), the learning rate schedule
(`twins.train.schedule`), the task's criterion (`twins.tasks`: for classification the loss of
`twins.train.loss`), global-norm clipping, the precision (`twins.train.precision`), the EMA of
the weights, the speed switches `compile` and `channels_last` (`twins.train.speed`) — and the
run's `TrainState`, so the fit loop, the fixture replays and a user's own loop all train
through the same code. A step whose gradients are not finite is skipped and counted, as the
seed's loss-scale cell skips an overflowing step; `max_nonfinite_steps` of them in a row stop
the run.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from twins.errors import TwinsError
from twins.train.loss import Criterion, logits_criterion
from twins.train.optim import build_optimizer, set_lr
from twins.train.precision import Precision, build_precision
from twins.train.schedule import lr_schedule
from twins.train.speed import inputs_in_memory_format, to_memory_format, training_model
from twins.train.state import TrainState


class Trainer:
    """`Trainer(config, model, steps_per_epoch)`; `model` may be wrapped in DDP.

    `step(images, targets)` runs one optimizer step and returns its loss (the loss of the
    forward pass before the update); targets are what the task's criterion takes (for
    classification class indices or soft targets, N x K). `criterion(model, inputs, targets)`
    gives the loss, or a dict of losses whose "loss" is the total (the parts of the last
    batch are kept in `loss_parts`); default: the training loss of the model's logits
    (`twins.train.loss`); the fit loop passes its task's.
    `lr` is the rate the next step uses. For accumulation over micro-batches, call
    `backward` per micro-batch and `apply` once.
    """

    def __init__(
        self,
        config: Any,
        model: nn.Module,
        steps_per_epoch: int,
        *,
        world_size: int | None = None,
        precision: Precision | None = None,
        criterion: Criterion | None = None,
    ) -> None:
        self.config = config
        self.module = getattr(model, "module", model)  # the model inside a DDP wrapper
        to_memory_format(self.module, config)
        # The step runs `model` (compiled where config.compile); evaluation, the EMA and the
        # checkpoints use the plain `module`.
        self.model = training_model(model, config)
        device = next(self.module.parameters()).device
        self.precision = precision or build_precision(config, device)
        self.optimizer = build_optimizer(self.module, config, device)
        self.schedule = lr_schedule(config, steps_per_epoch, world_size=world_size)
        self.criterion = criterion or logits_criterion(config)
        self.loss_parts: dict[str, torch.Tensor] = {}
        self.ema = ModelEmaV3(self.module, decay=config.ema_decay) if config.with_ema else None
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.clip = config.clip_global_norm_value or math.inf
        self.state = TrainState()
        set_lr(self.optimizer, self.lr)

    @property
    def lr(self) -> float:
        """The learning rate of the next optimizer step."""
        return self.schedule(self.state.step)

    @property
    def applied_lr(self) -> float:
        """The rate the last optimizer step used at lr scale 1: under `layer_decay`, the head's
        (the other groups ran at their `lr_scale` times it). What the logs report."""
        return self.schedule(max(self.state.step - 1, 0))

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimizer step on one batch; returns the batch's loss before the update."""
        if not self.model.training:
            self.model.train()
        loss = self.backward(images, targets)
        self.apply()
        return loss.item()

    def backward(
        self, images: torch.Tensor, targets: torch.Tensor, *, micro_batches: int = 1, sync=True
    ) -> torch.Tensor:
        """Forward and backward pass of one of `micro_batches` batches of an optimizer step
        (their gradients add up to the mean's); returns the batch's loss. Under DDP the
        gradients are all-reduced only where `sync` (the step's last micro-batch)."""
        no_sync = getattr(self.model, "no_sync", None)
        context = contextlib.nullcontext() if sync or no_sync is None else no_sync()
        images = inputs_in_memory_format(images, self.config)
        with context:
            with self.precision.autocast():
                loss = self.criterion(self.model, images, targets)
            if isinstance(loss, dict):
                self.loss_parts = {name: part.detach() for name, part in loss.items()}
                loss = loss["loss"]
            share = loss / micro_batches
            scaler = self.precision.scaler
            (scaler.scale(share) if scaler is not None else share).backward()
        return loss.detach()

    def apply(self) -> bool:
        """Clip and apply the gradients at the schedule's rate, then clear them; False (and no
        update) when they are not finite."""
        set_lr(self.optimizer, self.lr)
        finite = optimizer_step(self.optimizer, self.params, self.precision, self.clip)
        state = self.state
        state.step += 1
        if finite:
            state.nonfinite_run = 0
            if self.ema is not None:
                self.ema.update(self.module, step=state.step)
            return True
        state.nonfinite_run += 1
        limit = self.config.max_nonfinite_steps
        if limit and state.nonfinite_run >= limit:
            raise TwinsError(
                f"stopped at epoch {state.epoch + 1}, step {state.step}: the last "
                f"{state.nonfinite_run} steps in a row had "
                "a NaN or infinite loss or gradients; lower base_lr (or raise warmup_length, "
                "clip_global_norm_value) and run again to resume from the last checkpoint"
            )
        return False


def optimizer_step(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], precision: Precision, clip: float
) -> bool:
    """Clip and apply the accumulated gradients; False (and no update) when they are not finite."""
    scaler = precision.scaler
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, clip)  # clip = inf only measures
    finite = bool(torch.isfinite(norm))
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when unscaling found inf/NaN
        scaler.update(precision.fixed_scale)
    elif finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite
