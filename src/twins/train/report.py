"""What a run prints (`twins.console`): the lines that open it and the line that closes each
epoch (rank 0)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from twins.config import MMCV_POLICIES
from twins.console import say
from twins.data.folder import describe_left_out
from twins.storage import display
from twins.train.schedule import global_batch
from twins.train.threads import describe_threads
from twins.train.trainer import Trainer


def header(config: Any, trainer: Trainer, ctx: Any, train_set: Any, val_set: Any) -> list[str]:
    """The lines that open a run: semantics, model, devices, data, batch and lr, epochs."""
    model, schedule = trainer.module, trainer.schedule
    params = sum(p.numel() for p in model.parameters())
    batch = global_batch(config, ctx.world_size)
    scaled = (
        f"base_lr {config.base_lr:g} × {batch} / lr_base_size {config.lr_base_size}"
        if config.lr_base_size
        else "base_lr as given"
    )
    if schedule.top != schedule.peak:
        scaled += f" + min_lr {config.min_lr:g}, the seed's cosine offset"
    never = config.cooldown_epochs and config.semantics != "twins"
    cooldown = f" (its {config.cooldown_epochs} cooldown epochs never run)" if never else ""
    left_out = describe_left_out([train_set, val_set], config.data_url)
    lines = [
        f"semantics: {config.semantics}{_brings(config)} (docs/recipes.md)",
        f"model: {model.arch}, {params / 1e6:.2f} M parameters, {config.num_classes} classes",
        f"device: {ctx.device} × {ctx.world_size} process(es), {trainer.precision.describe()}, "
        + describe_threads(torch.get_num_threads(), config),
        f"data: {display(config.data_url)} ({len(train_set)} train, {len(val_set)} val images"
        + (f"; {left_out})" if left_out else ")"),
        f"batch: global {batch} = {config.batch_size} per device × {ctx.world_size} "
        f"× {config.accumulation_step} accumulation; peak lr {schedule.top:.3g} ({scaled})",
        _length(config, schedule, cooldown) + f"; output {display(config.train_url)}",
    ]
    if schedule.climbs:
        lines.append(
            f"notice: the peak lr {schedule.peak:.3g} ({scaled}) is below min_lr "
            f"{config.min_lr:g}, so the cosine climbs to min_lr: lower min_lr or raise base_lr"
        )
    return lines


def _length(config: Any, schedule: Any, cooldown: str) -> str:
    """How long the run is and how its rate goes: epochs or iterations, warmup, policy."""
    if config.lr_scheduler in MMCV_POLICIES:
        warmup = (
            f"warmup {config.warmup_iters} iterations from {config.warmup_ratio:g} × lr"
            if config.warmup_iters
            else "no warmup"
        )
        policy = (
            f"poly_lr (power {config.poly_power:g}) to min_lr {config.min_lr:g}"
            if config.lr_scheduler == "poly_lr"
            else f"step_lr × 0.1 after epochs {config.lr_steps}"
        )
        if config.counts_iterations:
            return (
                f"iterations: {config.max_iters}, {warmup}, {policy}; evaluated every "
                f"{config.eval_every}; {schedule.steps_per_epoch} steps per epoch"
            )
        return (
            f"epochs: {config.total_epochs}, {warmup}, {policy}; "
            f"{schedule.steps_per_epoch} steps per epoch, {schedule.total_steps} in all"
        )
    return (
        f"epochs: {config.total_epochs}{cooldown}, warmup {config.warmup_length} from "
        f"{config.warmup_lr:g}, {config.lr_scheduler} to min_lr {config.min_lr:g}; "
        f"{schedule.steps_per_epoch} steps per epoch, {schedule.total_steps} in all"
    )


def _brings(config: Any) -> str:
    """What the seed's semantics change beyond the schedule (docs/recipes.md has them all)."""
    if config.semantics != "seed":
        return ""
    brings = []
    if config.model_args.get("act_layer", "gelu_tanh") == "gelu_tanh":
        brings.append("tanh GELU")
    if config.optimizer != "sgd":
        brings.append("Adam without bias correction")
    brings += ["its label smoothing", "square (squash) eval resize"]
    return ", the MindSpore seed's training: " + ", ".join(brings)


def summary(
    record: dict[str, Any],
    total_epochs: int,
    best: str | bool,
    shown: tuple[str, ...],
) -> str:
    """The one line that closes an epoch; `best`: the weights ("raw", "ema") of a new best;
    `shown`: the task's validation results on it, its score first."""
    text = (
        f"epoch {record['epoch']}/{total_epochs}  loss {record['train_loss']:.4f}  "
        f"lr {record['lr']:.2e}"
    )
    values = [(key, record[f"val_{key}"]) for key in shown if f"val_{key}" in record]
    if values:
        text += "  val " + "  ".join(
            f"{key} {value:.4f}" if key == "loss" else f"{key} {value:.2f}" for key, value in values
        )
    if shown and f"ema_val_{shown[0]}" in record:
        text += f"  ema {shown[0]} {record[f'ema_val_{shown[0]}']:.2f}"
    text += f"  {record['epoch_seconds']:.1f}s  {record['images_per_s']:.0f} img/s"
    if record["skipped_steps"]:
        text += f"  {record['skipped_steps']} non-finite steps skipped"
    if record.get("images_skipped"):
        text += f"  {record['images_skipped']} unreadable images left out so far"
    return text + ({"ema": "  *best (EMA)*"}.get(best, "  *best*") if best else "")


def eval_summary(
    result: dict[str, Any], step: int, iterations: int, best: str | bool, shown: tuple[str, ...]
) -> str:
    """The line of an evaluation within a run counted in iterations."""
    text = f"iter {step}/{iterations}  val " + "  ".join(
        f"{key} {result[f'val_{key}']:.2f}" for key in shown if f"val_{key}" in result
    )
    if shown and f"ema_val_{shown[0]}" in result:
        text += f"  ema {shown[0]} {result[f'ema_val_{shown[0]}']:.2f}"
    return text + ({"ema": "  *best (EMA)*"}.get(best, "  *best*") if best else "")


def done_line(record: dict[str, Any], state: Any, output: Any, score: str, label: str) -> str:
    """The line that ends a run: the best val score (the task's `score`, called `label`) and
    its weights (what best.pt holds), and the last epoch's raw and EMA score."""
    weights = "EMA weights" if state.best_weights == "ema" else "raw weights"
    text = f"done: best val {label} {state.best_score:.2f}% ({weights}, in checkpoints/best.pt)"
    if f"ema_val_{score}" in record:
        text += (
            f"; last epoch val {label} {record[f'val_{score}']:.2f}%, "
            f"EMA {record[f'ema_val_{score}']:.2f}%"
        )
    return text + f"; output in {output}"


def printer(enabled: bool) -> Callable[..., None]:
    """`twins.console.say` where `enabled` (the main process); nothing elsewhere."""

    def say_here(text: str, *, final: bool = False) -> None:
        if enabled:
            say(text, final=final)

    return say_here
