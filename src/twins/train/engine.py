"""One training epoch and one evaluation pass (the thin engine of DeiT's `engine.py`).

Training: learning rate set per optimizer step from the schedule; Mixup/CutMix on whole
batches; autocast per the precision; `accumulation_step` micro-batches per optimizer step
(DDP synchronises only on the last); global-norm clipping; a step whose gradients are not
finite is skipped and counted (the seed's overflow rule), and `max_nonfinite_steps` of them in a
row stop the run; EMA updated after each real step. An epoch can start part way through, from
the `EpochState` a checkpoint kept. Under DDP the check that most images are not broken runs
every `log_every` optimizer steps, on the counts of all processes (`check_data`).
Evaluation: top-1, top-5 and mean cross entropy summed over every image once and reduced
across processes, so the result is exact whatever the shard sizes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from twins.errors import TwinsError
from twins.train.distributed import all_reduce_sum
from twins.train.precision import Precision
from twins.train.rng import derive_seed, seed_everything
from twins.train.schedule import LrSchedule, set_lr


@dataclass
class EpochState:
    """Where an epoch stands after an optimizer step, for this process: what a checkpoint taken
    within the epoch keeps so that the epoch goes on exactly as if it had not stopped.
    `nonfinite_run` counts the latest steps in a row that were skipped, across epochs."""

    global_step: int = 0
    batches: int = 0  # batches of the epoch this process has trained on
    steps: int = 0  # optimizer steps applied
    skipped: int = 0  # optimizer steps skipped for non-finite gradients
    images: int = 0
    loss_sum: float = 0.0  # sum of the applied steps' losses
    window_sum: float = 0.0  # ... since the last logged step
    window_steps: int = 0
    nonfinite_run: int = 0

    def to_tensor(self) -> torch.Tensor:
        """The fields as one float64 row (exact for these counts and sums)."""
        values = [getattr(self, f.name) for f in fields(self)]
        return torch.tensor(values, dtype=torch.float64)

    @classmethod
    def from_tensor(cls, row: torch.Tensor) -> EpochState:
        values = row.tolist()
        return cls(
            **{
                f.name: (value if isinstance(f.default, float) else int(value))
                for f, value in zip(fields(cls), values, strict=True)
            }
        )


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    criterion: Callable,
    precision: Precision,
    schedule: LrSchedule,
    config,
    *,
    epoch: int,
    global_step: int = 0,
    state: EpochState | None = None,
    batch_seed: int | None = None,
    mixup: Callable | None = None,
    ema: Any = None,
    on_log: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[EpochState], None] | None = None,
    checkpoint_every: int = 0,
    check_data: Callable[[], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train over `loader` once; returns the epoch's mean loss, steps, skips, images, seconds, the
    new `global_step` (optimizer steps since the run began) and `nonfinite_run`.

    `state` continues an epoch from a checkpoint taken within it (`loader` then yields the
    batches after `state.batches`); otherwise the epoch starts fresh at `global_step`.
    `batch_seed` reseeds the global random states (drop path, Mixup) before each batch from
    (batch_seed, batch index), so the draws do not depend on where the run was resumed.
    `on_checkpoint(state)` is called after every `checkpoint_every`-th optimizer step of the run
    but the epoch's last (the epoch's end has its own checkpoint). `max_nonfinite_steps` skipped
    steps in a row stop the run with a TwinsError. `check_data()` is called after every
    `log_every`-th optimizer step of the run: a step every process reaches, so it may be a
    collective (the judgement of broken images over all processes).
    """
    model.train()
    device = precision.device
    params = [p for p in model.parameters() if p.requires_grad]
    clip = config.clip_global_norm_value or math.inf
    accumulation = config.accumulation_step
    state = replace(state) if state is not None else EpochState(global_step=global_step)
    first = state.batches
    batches = first + len(loader)  # the epoch's batches, counting those done before a resume
    loss_sum = torch.tensor(state.loss_sum, device=device, dtype=torch.float64)
    window_sum = torch.tensor(state.window_sum, device=device, dtype=torch.float64)
    bar = tqdm(
        total=batches,
        initial=first,
        desc=f"epoch {epoch}",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    start = time.perf_counter()
    images_before = state.images
    optimizer.zero_grad(set_to_none=True)
    for index, (inputs, targets) in enumerate(loader, start=first):
        group_start = index - index % accumulation
        group_size = min(accumulation, batches - group_start)  # the last group may be short
        last_in_group = index + 1 == group_start + group_size
        if index == group_start:
            set_lr(optimizer, schedule(state.global_step))
            group_loss = torch.zeros((), device=device, dtype=torch.float64)
        if batch_seed is not None:
            seed_everything(derive_seed(batch_seed, index))
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup is not None:
            inputs, targets = mixup(inputs, targets)
        # Under DDP, gradients are all-reduced only on the group's last backward pass.
        no_sync = getattr(model, "no_sync", None)
        sync = contextlib.nullcontext() if last_in_group or no_sync is None else no_sync()
        with sync:
            with precision.autocast():
                loss = criterion(model(inputs), targets)
            scaled = loss / group_size
            (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
        group_loss += loss.detach() / group_size
        state.images += inputs.shape[0]
        state.batches = index + 1
        if not last_in_group:
            bar.update()
            continue
        # A NaN or infinite loss gives non-finite gradients, and after DDP's all-reduce every
        # process sees the same ones: all skip the same steps and stop together.
        finite = optimizer_step(optimizer, params, precision, clip)
        state.global_step += 1
        if finite:
            state.steps += 1
            state.window_steps += 1
            state.nonfinite_run = 0
            loss_sum += group_loss
            window_sum += group_loss
            if ema is not None:
                ema.update(getattr(model, "module", model), step=state.global_step)
        else:
            state.skipped += 1
            state.nonfinite_run += 1
            _stop_if_diverged(state, config.max_nonfinite_steps, epoch)
        lr = optimizer.param_groups[0]["lr"]
        if state.global_step % config.log_every == 0 and state.window_steps:
            window_loss = window_sum.item() / state.window_steps
            if on_log is not None:
                on_log(
                    {"kind": "step", "epoch": epoch, "step": state.global_step}
                    | {"train_loss": window_loss, "lr": lr}
                )
            window_sum.zero_()
            state.window_steps = 0
            if progress:
                rate = (state.images - images_before) / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{window_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
        bar.update()
        if check_data is not None and state.global_step % config.log_every == 0:
            check_data()
        if (
            on_checkpoint is not None
            and checkpoint_every
            and state.global_step % checkpoint_every == 0
            and state.batches < batches
        ):
            state.loss_sum, state.window_sum = loss_sum.item(), window_sum.item()
            on_checkpoint(replace(state))
    bar.close()
    # The epoch's loss is averaged over the steps of every process.
    totals = all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(state.steps)]))
    mean_loss = (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan
    return {
        "train_loss": mean_loss,
        "steps": state.steps + state.skipped,
        "skipped_steps": state.skipped,
        "images": state.images,
        "trained_images": state.images - images_before,  # by this process, in this call
        "seconds": max(time.perf_counter() - start, 1e-6),
        "global_step": state.global_step,
        "nonfinite_run": state.nonfinite_run,
    }


def _stop_if_diverged(state: EpochState, limit: int, epoch: int) -> None:
    if limit and state.nonfinite_run >= limit:
        raise TwinsError(
            f"stopped at epoch {epoch}, step {state.global_step}: the last {state.nonfinite_run} "
            "steps in a row had a NaN or infinite loss or gradients; lower base_lr (or raise warmup_length, "
            "clip_global_norm_value) and run again to resume from the last checkpoint"
        )


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


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, precision: Precision, *, progress: bool = False, desc: str = "eval"
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (%), mean cross entropy and the number of images, over every
    process's shard. Top-5 is top-k with k = min(5, classes)."""
    model.eval()
    device = precision.device
    # Sums of loss, top-1 hits, top-5 hits and images, in float64 so counts stay exact.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    bar = tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    for inputs, targets in bar:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(inputs)
        logits = logits.float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        totals += torch.stack(
            [
                F.cross_entropy(logits, targets, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                totals.new_tensor(targets.shape[0]),
            ]
        )
    loss_sum, top1, top5, count = all_reduce_sum(totals).tolist()
    if count == 0:
        raise TwinsError("the validation set is empty: put images in the val/ class folders")
    return {
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count,
        "loss": loss_sum / count,
        "images": int(count),
    }
