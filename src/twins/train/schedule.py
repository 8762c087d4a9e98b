"""The learning rate per optimizer step, as a pure function of the step number.

The seed's `cosine_lr` policy (MindSpore ModelZoo, `src/tools/schedulers.py`): a linear warmup
from `warmup_lr` to the base rate over `warmup_length` epochs, a half cosine down to `min_lr` at
the end of `epochs`, then `cooldown_epochs` held at `min_lr` (the seed computes the cooldown but
never trains it; here the run lasts `epochs + cooldown_epochs`). `constant_lr` keeps the base
rate after the warmup. Being a function of the step, the schedule needs no state to resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LrSchedule:
    base_lr: float
    warmup_lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int  # the step where the cosine reaches min_lr: epochs * steps per epoch
    policy: str = "cosine_lr"

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * step / self.warmup_steps
        if self.policy == "constant_lr":
            return self.base_lr
        if step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
        return self.min_lr + (self.base_lr - self.min_lr) * cosine


def build_schedule(config, base_lr: float, steps_per_epoch: int) -> LrSchedule:
    """`config` is a TrainConfig; `base_lr` the rate after any batch-size scaling."""
    return LrSchedule(
        base_lr=base_lr,
        warmup_lr=config.warmup_lr,
        min_lr=config.min_lr,
        warmup_steps=config.warmup_length * steps_per_epoch,
        decay_steps=config.epochs * steps_per_epoch,
        policy=config.lr_scheduler,
    )


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
