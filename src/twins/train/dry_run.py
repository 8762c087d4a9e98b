"""`twins train --dry-run`: what a run would do, up to one measured optimizer step, and nothing
written (no output folder, no checkpoint, no log; the data read, never changed).

It resolves the config, scans the data through the task (`twins.train.task.Task.datasets`: the
counts, classes and files left out), builds the model and the trainer as the fit loop does
(`twins.train.fit_loop`), reads one training batch through the real loader and the task's
device pipeline, prints the learning rate at the schedule's landmarks (start, end of warmup,
peak, end) and the steps per epoch and in all, then times one optimizer step on the device and
measures its peak memory (`twins.memory`: CUDA's allocated peak, or the process's resident
peak on a CPU). The first step pays for warm-up (and compilation with `compile: true`), so a
second one is timed too. One process: under torchrun the real run's global batch is larger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from twins import console, storage
from twins.config import MMCV_POLICIES, TrainConfig
from twins.device import select_device
from twins.memory import PeakMemory
from twins.seeds import seed_everything
from twins.train import distributed, resume
from twins.train.fit_loop import build_model, check_output_outside_data, training_loaders
from twins.train.report import header
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.schedule import LrSchedule
from twins.train.speed import to_memory_format
from twins.train.task import Task
from twins.train.threads import compute_threads, threads_set
from twins.train.trainer import Trainer


def dry_run(
    config: TrainConfig, task: Task, say: Callable[[str], None] = console.say
) -> dict[str, Any]:
    """Everything `fit(config, task)` does before its first step, and one measured step; says
    what it finds line by line and returns it (counts, parameters, steps, lr landmarks, the
    step's seconds and peak memory)."""
    check_output_outside_data(config.train_url, config.data_url, task.data_folders)
    ctx = distributed.DistContext(0, 1, 0, select_device(config.device_target))
    with threads_set(compute_threads(config)):
        return _dry_run(config, task, ctx, say)


def _dry_run(
    config: TrainConfig, task: Task, ctx: distributed.DistContext, say: Callable[[str], None]
) -> dict[str, Any]:
    for line in _resumes(config):
        say(line)
    train_set, val_set, class_names = task.datasets(config)
    seed_everything(config.seed)
    model = to_memory_format(build_model(config, task, config.pretrained).to(ctx.device), config)
    samples = SampleSeededDataset(train_set, config.seed)
    train_loader, _ = training_loaders(config, ctx, task, samples, val_set)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulation_step)
    trainer = Trainer(
        config, model, steps_per_epoch, world_size=1, criterion=task.criterion(config)
    )
    for line in header(config, trainer, ctx, train_set, val_set):
        say(line)
    say(f"classes: {len(class_names)} ({_first(class_names)})")
    landmarks = lr_landmarks(trainer.schedule)
    say("lr: " + "; ".join(f"{name} {lr:.4g} (step {step})" for name, step, lr in landmarks))

    samples.set_epoch(0)
    train_loader.set_epoch(0)
    inputs, targets = next(iter(train_loader))
    inputs, targets = task.to_device(config)(inputs, targets, ctx.device)
    mixup = task.batch_mix(config)
    if mixup is not None:
        inputs, targets = mixup(inputs, targets)
    say(f"first batch: {_shape(inputs)} inputs, {_shape(targets)} targets, on {ctx.device}")
    seconds, peak, memory = _measured_steps(trainer, inputs, targets, ctx.device)
    say(
        f"step: {seconds[1]:.3f} s (the first {seconds[0]:.3f} s, with warm-up"
        f"{' and compilation' if config.compile else ''}); peak memory {peak:.0f} MiB "
        f"({memory}); nothing written, {storage.display(config.train_url)} untouched"
    )
    return {
        "train_images": len(train_set),
        "val_images": len(val_set),
        "classes": len(class_names),
        "left_out": sum(len(getattr(data, "left_out", ())) for data in (train_set, val_set)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": trainer.schedule.total_steps,
        "lr": {name: (step, lr) for name, step, lr in landmarks},
        "step_seconds": seconds[1],
        "first_step_seconds": seconds[0],
        "peak_memory_mib": peak,
        "memory_kind": memory,
    }


def lr_landmarks(schedule: LrSchedule) -> list[tuple[str, int, float]]:
    """(name, optimizer step, lr) at the start, the end of warmup (where there is one), the peak
    (the first step at the highest rate) and the last step of the run."""
    total = schedule.total_steps
    rates = [schedule(step) for step in range(total)]
    peak = max(range(total), key=rates.__getitem__)
    if schedule.max_iters or schedule.policy in MMCV_POLICIES:
        warmup = schedule.warmup_iters
    else:  # counted from the schedule's start, which start_epoch skips into
        warmup = (schedule.warmup_epochs - schedule.start_epoch) * schedule.steps_per_epoch
    marks = [("start", 0)]
    if 0 < warmup < total:
        marks.append(("end of warmup", warmup))
    marks += [("peak", peak), ("end", total - 1)]
    return [(name, step, rates[step]) for name, step in marks]


def _resumes(config: TrainConfig) -> list[str]:
    """Where the run would go on from, for an output folder on this machine that holds one (a
    checkpoint of another model is refused, as the run would); bucket outputs are not read."""
    if storage.is_remote(config.train_url):
        return []
    last = Path(config.train_url).expanduser() / "checkpoints" / "last.pt"
    if not last.is_file():
        return []
    saved = resume.load_checkpoint(last)
    return [*resume.check_same_run(saved, config, last), resume.describe(saved, last)]


def _measured_steps(
    trainer: Trainer, inputs: Any, targets: Any, device: torch.device
) -> tuple[list[float], float, str]:
    """Seconds of two optimizer steps on the batch, and the peak memory of the second."""
    memory = PeakMemory(device)
    seconds = []
    for _ in range(2):
        _synchronize(device)
        memory.reset()
        start = time.perf_counter()
        trainer.step(inputs, targets)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, memory.read_mib(), memory.kind


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shape(batch: Any) -> str:
    """A tensor's shape, or what a list of images or targets holds."""
    if isinstance(batch, torch.Tensor):
        return " x ".join(map(str, batch.shape))
    return f"{len(batch)} x {type(batch[0]).__name__}" if batch else "0"


def _first(names: list[str], shown: int = 5) -> str:
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
