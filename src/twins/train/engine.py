"""One training epoch (the thin engine of DeiT's `engine.py`; each task evaluates with its own
metric, `twins.train.task.Task.evaluate`).

Training: each batch moved to and finished on the device (`to_device`, the task's: for
classification the loader's uint8 images normalised and erased there, as timm's prefetcher
does), then through Mixup/CutMix (whole batches) and the `Trainer`; `accumulation_step`
micro-batches per optimizer step (DDP synchronises only on the last). Before each batch the
global random states (drop path, Mixup) are reseeded from (seed, epoch, rank, batch), so the
draws do not depend on where the run was resumed. An epoch can start part way through, from
the `EpochProgress` a checkpoint kept (the loader then yields the batches after it).
`after_step(trainer, last_of_epoch)` runs after every optimizer step: the fit loop checks the
data, saves and stops there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from twins.seeds import derive_seed, seed_everything
from twins.train.distributed import all_reduce_sum, rank
from twins.train.trainer import Trainer


def train_one_epoch(
    trainer: Trainer,
    loader: Any,
    *,
    to_device: Callable[[Any, Any, torch.device], tuple[Any, Any]] | None = None,
    mixup: Callable | None = None,
    log: Callable[[dict], None] | None = None,
    after_step: Callable[[Trainer, bool], None] | None = None,
    progress: bool = False,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Train over `loader` once, or until the run's step `stop_at_step` (a run counted in
    iterations ends within an epoch); returns the epoch's mean loss (over every process's
    applied steps), its optimizer steps, skipped steps, images and seconds. `log(record)` gets the mean
    loss of the applied steps every `log_every` optimizer steps of the run, and the parts of the
    last batch's loss where the task's criterion gives them (`train_<part>`)."""
    state, config = trainer.state, trainer.config
    epoch = state.epoch + 1
    done = state.progress
    first = done.batches
    batches = first + len(loader)  # the epoch's batches, counting those done before a resume
    accumulation = config.accumulation_step
    batch_seed = derive_seed(config.seed, state.epoch, rank())
    device = trainer.precision.device
    # Running sums stay on the device: reading them each step would wait for the GPU.
    done.loss_sum = torch.tensor(float(done.loss_sum), device=device, dtype=torch.float64)
    done.window_sum = torch.tensor(float(done.window_sum), device=device, dtype=torch.float64)
    bar = tqdm(total=batches, initial=first, desc=f"epoch {epoch}", disable=not progress,
               dynamic_ncols=True, leave=False)  # fmt: skip
    start, images_before = time.perf_counter(), done.images
    trainer.model.train()
    for index, (inputs, targets) in enumerate(loader, start=first):
        group_start = index - index % accumulation
        group_size = min(accumulation, batches - group_start)  # the last group may be short
        last_in_group = index + 1 == group_start + group_size
        if index == group_start:
            group_loss = torch.zeros((), device=device, dtype=torch.float64)
        seed_everything(derive_seed(batch_seed, index))
        if to_device is None:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
        else:
            inputs, targets = to_device(inputs, targets, device)
        if mixup is not None:
            inputs, targets = mixup(inputs, targets)
        loss = trainer.backward(inputs, targets, micro_batches=group_size, sync=last_in_group)
        group_loss += loss / group_size
        done.images += len(inputs)  # a tensor's rows, or a list of images of different sizes
        done.batches = index + 1
        bar.update()
        if not last_in_group:
            continue
        # A NaN or infinite loss gives non-finite gradients, and after DDP's all-reduce every
        # process sees the same ones: all skip the same steps and stop together.
        if trainer.apply():
            done.steps += 1
            done.window_steps += 1
            done.loss_sum += group_loss
            done.window_sum += group_loss
        else:
            done.skipped += 1
        if state.step % config.log_every == 0 and done.window_steps:
            window_loss = done.window_sum.item() / done.window_steps
            if log is not None:
                log({"kind": "step", "epoch": epoch, "step": state.step}
                    | {"train_loss": window_loss, "lr": trainer.applied_lr}
                    | _last_parts(trainer))  # fmt: skip
            done.window_sum.zero_()
            done.window_steps = 0
            if progress:
                rate = (done.images - images_before) / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(
                    loss=f"{window_loss:.4f}", lr=f"{trainer.lr:.2e}", img_s=f"{rate:.0f}"
                )
        if after_step is not None:
            after_step(trainer, done.batches == batches)
        if stop_at_step is not None and state.step >= stop_at_step:
            break
    bar.close()
    totals = all_reduce_sum(torch.stack([done.loss_sum, done.loss_sum.new_tensor(done.steps)]))
    return {
        "train_loss": (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan,
        "steps": done.steps + done.skipped,
        "skipped_steps": done.skipped,
        "images": done.images,
        "trained_images": done.images - images_before,  # by this process, in this call
        "seconds": max(time.perf_counter() - start, 1e-6),
    }


def _last_parts(trainer: Trainer) -> dict[str, float]:
    """The parts of the last batch's loss (a dense task's: each head's), as train_<part>."""
    return {f"train_{k}": v.item() for k, v in trainer.loss_parts.items() if k != "loss"}
