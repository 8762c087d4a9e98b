"""The learning rate of every optimizer step, under each recipe semantics.

`lr_schedule(config, steps_per_epoch)` is a pure function of the optimizer step (0-based,
counted from the run's first step), so a resumed run needs no schedule state. `peak` is
`base_lr`, scaled by global batch / `lr_base_size` when that is set (timm's linear rule).

- seed (MindSpore ModelZoo Twins, `cosine_lr`, replayed against the seed's own lr array):
  per step, a linear warmup from `warmup_lr` over `warmup_length` epochs, then
  `min_lr + 0.5 (1 + cos(pi e / E)) peak` (an offset: the top is peak + min_lr) over the
  E = `epochs - warmup_length` epochs after it, then `min_lr` for `cooldown_epochs`; the whole
  array is clipped below at `min_lr`, so the first warmup steps run at `min_lr`. The seed
  trains `epochs` epochs of it: the cooldown is never reached.
- official (the released logs of the official runs: timm's per-epoch cosine, stepped after
  each epoch with the number of the epoch just finished): during epoch `e` (0-based) the lr
  is `f(max(e - 1, 0))`, `f(t) = warmup_lr + t (peak - warmup_lr) / W` for `t < W` and
  `min_lr + 0.5 (peak - min_lr) (1 + cos(pi t / epochs))` after. `epochs` are trained.
- twins (this toolkit's): per step, the linear warmup, then a half cosine from `peak` to
  `min_lr` between the warmup's end and the end of `epochs`, then `cooldown_epochs` held at
  `min_lr`, which are trained too.

`constant_lr` keeps `peak` after the same warmup. A run that starts with `start_epoch > 0`
continues each schedule from there.

The dense recipes use mmcv 1.2's `LrUpdaterHook`s (`mmcv/runner/hooks/lr_updater.py`), the same
under every semantics, with the lr set before each iteration `i` (0-based):
- `poly_lr` (PolyLrUpdaterHook, by iteration): `(peak - min_lr) (1 - i / N) ** poly_power +
  min_lr` over N = `max_iters` iterations; a run counted in epochs has N = epochs × steps.
- `step_lr` (StepLrUpdaterHook, by epoch): `peak × 0.1 ** k`, k the number of `lr_steps` epochs
  done (mmcv's default gamma, which every recipe keeps).
- the linear warmup of both, over the first `warmup_iters` iterations, scales the rate the
  policy gives at that same iteration: `regular(i) × (1 - (1 - i / W)(1 - warmup_ratio))`.
A run counted in iterations (`max_iters`) does not use `steps_per_epoch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from twins.config import MMCV_POLICIES

# StepLrUpdaterHook's default gamma, which every official recipe keeps.
STEP_GAMMA = 0.1


@dataclass(frozen=True)
class LrSchedule:
    semantics: str
    peak: float
    warmup_lr: float
    min_lr: float
    warmup_epochs: int
    epochs: int
    cooldown_epochs: int
    steps_per_epoch: int
    start_epoch: int = 0
    policy: str = "cosine_lr"
    max_iters: int = 0  # > 0: the run counts iterations (poly_lr)
    warmup_iters: int = 0  # mmcv's warmup (poly_lr, step_lr)
    warmup_ratio: float = 0.001
    power: float = 1.0
    lr_steps: tuple[int, ...] = ()

    @property
    def trained_epochs(self) -> int:
        """Epochs of the schedule the run trains (from epoch 0, whatever its start_epoch)."""
        if self.semantics == "twins" and self.policy not in MMCV_POLICIES:
            return self.epochs + self.cooldown_epochs
        return self.epochs

    @property
    def total_steps(self) -> int:
        """The optimizer steps this run trains."""
        if self.max_iters:
            return self.max_iters
        return (self.trained_epochs - self.start_epoch) * self.steps_per_epoch

    @property
    def top(self) -> float:
        """The highest rate of the schedule: `peak`, but `peak + min_lr` under the seed's
        cosine, whose offset puts its top above the warmup's end."""
        if self.semantics == "seed" and self.policy == "cosine_lr":
            return self.peak + self.min_lr
        return self.peak

    @property
    def climbs(self) -> bool:
        """Whether the cosine climbs instead of decaying: a peak below `min_lr` (possible when
        `lr_base_size` scales `base_lr` down), under the semantics that decay to `min_lr`."""
        decays = self.policy == "poly_lr" or (
            self.policy == "cosine_lr" and self.semantics != "seed"
        )
        return decays and self.peak < self.min_lr

    def __call__(self, step: int) -> float:
        if self.max_iters:
            return self._mmcv(step)
        at = self.start_epoch * self.steps_per_epoch + step  # steps since the schedule began
        if self.policy in MMCV_POLICIES:
            return self._mmcv(at)
        if self.semantics == "official":
            return self._official(at // self.steps_per_epoch)
        return self._per_step(at)

    def _per_step(self, step: int) -> float:
        warmup = self.warmup_epochs * self.steps_per_epoch
        decay = (self.epochs - self.warmup_epochs) * self.steps_per_epoch  # steps of the cosine
        if step < warmup:
            rate = self.warmup_lr + (self.peak - self.warmup_lr) * step / warmup
        elif self.policy == "constant_lr":
            rate = self.peak
        elif step - warmup >= decay:
            rate = self.min_lr
        elif self.semantics == "seed":
            rate = self.min_lr + 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay)) * self.peak
        else:
            cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay))
            rate = self.min_lr + (self.peak - self.min_lr) * cosine
        return max(rate, self.min_lr) if self.semantics == "seed" else rate

    def _mmcv(self, step: int) -> float:
        if self.policy == "poly_lr":
            length = self.max_iters or self.epochs * self.steps_per_epoch
            coeff = (1 - step / length) ** self.power
            rate = (self.peak - self.min_lr) * coeff + self.min_lr
        else:
            epoch = step // self.steps_per_epoch
            rate = self.peak * STEP_GAMMA ** sum(epoch >= s for s in self.lr_steps)
        if step < self.warmup_iters:
            rate *= 1 - (1 - step / self.warmup_iters) * (1 - self.warmup_ratio)
        return rate

    def _official(self, epoch: int) -> float:
        t = max(epoch - 1, 0)  # stepped after each epoch with the number of the epoch done
        if t < self.warmup_epochs:
            return self.warmup_lr + t * (self.peak - self.warmup_lr) / self.warmup_epochs
        if self.policy == "constant_lr":
            return self.peak
        cosine = 0.5 * (1 + math.cos(math.pi * t / self.epochs))
        return self.min_lr + (self.peak - self.min_lr) * cosine


def global_batch(config: Any, world_size: int | None = None) -> int:
    """Images per optimizer step over all processes: batch_size × processes × accumulation."""
    if world_size is None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return config.batch_size * world_size * config.accumulation_step


def peak_lr(config: Any, world_size: int | None = None) -> float:
    """`base_lr`, scaled linearly to the global batch when `lr_base_size` is set."""
    if not config.lr_base_size:
        return config.base_lr
    return config.base_lr * global_batch(config, world_size) / config.lr_base_size


def lr_schedule(config: Any, steps_per_epoch: int, *, world_size: int | None = None) -> LrSchedule:
    """The schedule of `config` (a TrainConfig) at `steps_per_epoch` optimizer steps per epoch;
    `world_size` defaults to the processes of the running torch.distributed group."""
    return LrSchedule(
        semantics=config.semantics,
        peak=peak_lr(config, world_size),
        warmup_lr=config.warmup_lr,
        min_lr=config.min_lr,
        warmup_epochs=config.warmup_length,
        epochs=config.epochs,
        cooldown_epochs=config.cooldown_epochs,
        steps_per_epoch=steps_per_epoch,
        start_epoch=config.start_epoch,
        policy=config.lr_scheduler,
        max_iters=config.max_iters,
        warmup_iters=config.warmup_iters,
        warmup_ratio=config.warmup_ratio,
        power=config.poly_power,
        lr_steps=tuple(config.lr_steps),
    )
