"""The fit loop: build everything from the config, resume if the output folder holds a run,
then train, evaluate and checkpoint epoch after epoch.

Resuming: when `<train_url>/checkpoints/last.pt` exists, the run continues from it (model,
optimizer, loss scaler, EMA, epoch, step, best top-1; the schedule is a function of the step).
last.pt is written at the end of every epoch and, with `save_every_steps`, every N optimizer
steps within one; then it also holds every process's `EpochState` and how many images of the
epoch's order were done. No random draw depends on how the run got to where it is: the data
order comes from (seed, epoch) (`ResumableSampler`), each image's augmentation from
(seed, epoch, index) (`SampleSeededDataset`), and the global states used by the model (drop
path) and Mixup are reseeded before each batch from (seed, epoch, rank, batch). So a run killed
at any moment and started again with the same command ends exactly as an unbroken run (with
the same number of processes and batch size; on the CPU, or on GPUs with deterministic kernels).
`pretrained` initialises the weights of a fresh run only, dropping a head of another size.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from twins.data import build_datasets, build_loader, build_mixup
from twins.errors import TwinsError
from twins.models import create_model
from twins.train import distributed
from twins.train.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointFiles,
    check_finite,
    load_checkpoint,
    model_meta,
)
from twins.train.config import TrainConfig, save_config
from twins.train.engine import EpochState, evaluate, train_one_epoch
from twins.train.metrics import RunLog
from twins.train.optim import build_optimizer
from twins.train.precision import build_precision, hardware_notice
from twins.train.rng import capture_rng, derive_seed, restore_rng, seed_everything
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import ResumableSampler
from twins.train.schedule import build_schedule

# Keys that must match for a checkpoint in the output folder to be resumed (same model).
_ARCH_KEYS = ("arch", "model_args", "num_classes")


def fit(config: TrainConfig, *, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train per `config`; returns the last epoch's record (val_top1, ...) plus `best_top1` and
    `output`. `stop_after_epoch` ends the process's work after that epoch (1-based) without
    finishing the run, which the same call resumes later (time-limited jobs, tests)."""
    ctx = distributed.setup(config.device_target)
    try:
        return _fit(config, ctx, stop_after_epoch)
    finally:
        distributed.cleanup()


def build_model(config: TrainConfig, pretrained: str | None = None, **overrides: Any) -> nn.Module:
    """The config's model: `arch` with `model_args`, `num_classes` and `drop_path_rate`."""
    arguments = {**config.model_args, **overrides}
    return create_model(
        config.arch,
        pretrained=pretrained,
        num_classes=config.num_classes,
        drop_path_rate=config.drop_path_rate,
        **arguments,
    )


def _fit(
    config: TrainConfig, ctx: distributed.DistContext, stop_after_epoch: int | None
) -> dict[str, Any]:
    say = _printer(ctx.is_main)
    output = Path(config.train_url)
    files = CheckpointFiles(output / "checkpoints", config.keep_checkpoint_max, config.save_every)
    state = load_checkpoint(files.last) if files.last.is_file() else None
    if state is not None:
        _check_same_run(state, config, files.last)
    _check_same_start(ctx, state, files.last)
    if ctx.is_main:
        files.remove_temporaries()  # left by a process killed while writing

    train_set, val_set, class_names = build_datasets(config)  # first: fail fast on a bad folder
    seed_everything(config.seed)  # the same initial weights on every rank and every try
    if state is None:
        model = build_model(config, pretrained=config.pretrained)
    else:
        # The activation comes with the weights: `pretrained` may have chosen the tanh GELU.
        act_layer = state.get("meta", {}).get("act_layer")
        model = build_model(config, **({"act_layer": act_layer} if act_layer else {}))
    model = model.to(ctx.device)
    precision = build_precision(config, ctx.device)
    optimizer = build_optimizer(model, config, ctx.device)
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.with_ema else None
    start_epoch, global_step, best_top1 = config.start_epoch, 0, -math.inf
    nonfinite_run, within_epoch = 0, None
    if state is not None:
        _restore(state, model, optimizer, precision, ema)
        start_epoch, global_step = state["epoch"], state["global_step"]
        best_top1 = state.get("best_top1", -math.inf)
        nonfinite_run = state.get("nonfinite_run", 0)
        within_epoch = state.get("epoch_progress")
    trained = model
    if ctx.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # The PEG's depthwise kernels (C, 1, 3, 3) get gradients whose strides differ from the
        # weights' only along the size-1 axis, where strides mean nothing; DDP warns regardless.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        trained = DistributedDataParallel(model, device_ids=device_ids)

    train_samples = SampleSeededDataset(train_set, config.seed)
    train_loader, val_loader = _loaders(config, ctx, train_samples, val_set)
    # Under DDP no process stops alone on the broken images of its own shard: all judge the
    # counts of every process together (a collective), every log_every steps and after each
    # evaluation. One process judges after every batch, in its loaders.
    check_train = check_val = None
    if ctx.enabled:
        check_train = functools.partial(distributed.check_health_together, train_set, ctx.device)
        check_val = functools.partial(distributed.check_health_together, val_set, ctx.device)
    train_sampler = train_loader.sampler
    mixup = build_mixup(config)
    if mixup is not None and config.batch_size % 2:
        raise TwinsError(f"mixup/cutmix need an even batch_size, not {config.batch_size}")
    # timm's Mixup folds label smoothing into its soft targets.
    criterion = (
        SoftTargetCrossEntropy()
        if mixup is not None
        else nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulation_step)
    global_batch = config.batch_size * ctx.world_size * config.accumulation_step
    lr = (
        config.base_lr * global_batch / config.lr_base_size
        if config.lr_base_size
        else config.base_lr
    )
    schedule = build_schedule(config, lr, steps_per_epoch)
    run = _Run(config, ctx, model, ema, optimizer, precision, files, class_names)
    run.sets = (train_set, val_set)
    run.counts_before = dict(state.get("data_counts") or {}) if state else {}

    if ctx.is_main:
        save_config(config, output / "config.yaml")
    log = RunLog(output, ctx.is_main, resume_epoch=start_epoch, resume_step=global_step)
    for notice in (hardware_notice(config, precision), distributed.restart_notice()):
        if notice:
            say(notice)
    for line in _header(config, model, ctx, precision, train_set, val_set, global_batch, lr):
        say(line)
    total_steps = steps_per_epoch * config.total_epochs
    say(f"schedule: {steps_per_epoch} steps per epoch, {total_steps} in all")
    if within_epoch is not None:
        say(
            f"resuming from {files.last} within epoch {start_epoch + 1} (step {global_step}, "
            f"{within_epoch['samples']} of its images done)"
        )
    elif state is not None:
        say(f"resuming from {files.last} after epoch {start_epoch} (step {global_step})")

    record: dict[str, Any] = dict(state.get("metrics") or {}) if state else {}
    progress = ctx.is_main and sys.stderr.isatty()
    try:
        for epoch_index in range(start_epoch, config.total_epochs):
            epoch = epoch_index + 1
            train_samples.set_epoch(epoch_index)
            train_loader.set_epoch(epoch_index)  # the sampler's order too, from its start
            epoch_state = EpochState(global_step=global_step, nonfinite_run=nonfinite_run)
            if within_epoch is not None:
                epoch_state = _continue_epoch(within_epoch, config, ctx, train_sampler, say)
                within_epoch = None
            stats = train_one_epoch(
                trained,
                train_loader,
                optimizer,
                criterion,
                precision,
                schedule,
                config,
                epoch=epoch,
                state=epoch_state,
                batch_seed=derive_seed(config.seed, epoch_index, ctx.rank),
                mixup=mixup,
                ema=ema,
                on_log=log.log,
                on_checkpoint=functools.partial(
                    run.save_within_epoch, epoch_index, record, best_top1
                ),
                checkpoint_every=config.save_every_steps,
                check_data=check_train,
                progress=progress,
            )
            global_step, nonfinite_run = stats["global_step"], stats["nonfinite_run"]
            record = {
                "kind": "epoch",
                "epoch": epoch,
                "step": global_step,
                "train_loss": stats["train_loss"],
                "lr": optimizer.param_groups[0]["lr"],
                "skipped_steps": stats["skipped_steps"],
                "epoch_seconds": round(stats["seconds"], 3),
                "images_per_s": round(
                    stats["trained_images"] * ctx.world_size / stats["seconds"], 1
                ),
            }
            is_best = False
            if epoch % config.eval_every == 0 or epoch == config.total_epochs:
                val = evaluate(model, val_loader, precision, progress=progress)
                if check_val is not None:
                    check_val()
                record.update({f"val_{k}": v for k, v in val.items()})
                if ema is not None:
                    ema_val = evaluate(ema.module, val_loader, precision, progress=progress)
                    record.update({f"ema_val_{k}": v for k, v in ema_val.items()})
                is_best = val["top1"] > best_top1
                best_top1 = max(best_top1, val["top1"])
            counts = run.data_counts()
            record.update(counts)
            # Logged before the checkpoint: a kill between the two repeats the epoch, whose
            # line the resumed run drops and writes again.
            log.log(record)
            run.save_epoch(
                record,
                is_best,
                epoch=epoch,
                global_step=global_step,
                best_top1=best_top1,
                nonfinite_run=nonfinite_run,
                data_counts=counts,
            )
            log.end_epoch()
            say(_summary(record, config.total_epochs, is_best))
            distributed.barrier()
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    finally:
        log.close()
    if start_epoch >= config.total_epochs:
        say(f"{output} holds a finished run of {config.total_epochs} epochs: nothing to train")
    say(f"done: best val top-1 {best_top1:.2f}%; output in {output}")
    return {**record, "best_top1": best_top1, "output": str(output)}


class _Run:
    """What the checkpoints of a run are made of, and how they are written (rank 0 only, after
    every rank has checked that the weights are finite, so all stop together if not)."""

    def __init__(self, config, ctx, model, ema, optimizer, precision, files, class_names) -> None:
        self.config, self.ctx, self.model, self.ema = config, ctx, model, ema
        self.optimizer, self.precision, self.files = optimizer, precision, files
        self.class_names = class_names
        self.sets: tuple = ()  # the data sets whose broken and converted images are counted
        self.counts_before: dict[str, int] = {}  # the counts a resumed checkpoint holds

    def data_counts(self) -> dict[str, int]:
        """Images left out as unreadable and converted to RGB since the run began: every
        process's counts (both splits, all loader workers) plus those before a resume."""
        names = ("skipped", "converted")
        if not all(hasattr(s, n) for s in self.sets for n in names):
            return {}
        counts = torch.tensor(
            [sum(getattr(s, n) for s in self.sets) for n in names], dtype=torch.float64
        )
        counts = distributed.all_reduce_sum(counts.to(self.ctx.device)).tolist()
        return {
            f"images_{n}": int(c) + self.counts_before.get(f"images_{n}", 0)
            for n, c in zip(names, counts, strict=True)
        }

    def checkpoint(self, record: dict[str, Any], **fields: Any) -> dict[str, Any]:
        state = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model.state_dict(),
            "meta": model_meta(self.model, self.class_names),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "rng": capture_rng(),
            "data": {"seed": self.config.seed, "epoch": fields["epoch"]},
            "config": self.config.to_dict(),
            "metrics": record,
            **fields,
        }
        if self.ema is not None:
            state["model_ema"] = self.ema.module.state_dict()
        return state

    def check_finite(self, when: str) -> None:
        check_finite(self.model.state_dict(), f"the model {when}")
        if self.ema is not None:
            check_finite(self.ema.module.state_dict(), f"the EMA model {when}")

    def save_epoch(self, record: dict[str, Any], is_best: bool, **fields: Any) -> None:
        self.check_finite(f"after epoch {fields['epoch']}")
        if self.ctx.is_main:
            self.files.save(self.checkpoint(record, **fields), is_best)

    def save_within_epoch(
        self, epoch_index: int, record: dict[str, Any], best_top1: float, state: EpochState
    ) -> None:
        """last.pt at an optimizer step within epoch `epoch_index` (0-based): every process's
        `EpochState` and the epoch's place in the data order, to go on from there."""
        ranks = distributed.all_gather_rows(state.to_tensor().to(self.ctx.device)).cpu()
        counts = self.data_counts()
        self.check_finite(f"at step {state.global_step}")
        if not self.ctx.is_main:
            return
        world, batch = self.ctx.world_size, self.config.batch_size
        progress = {
            "epoch": epoch_index,
            "batches": state.batches,
            "samples": state.batches * batch * world,
            "world_size": world,
            "batch_size": batch,
            "ranks": ranks,
        }
        fields = {
            "epoch": epoch_index,  # epochs done
            "global_step": state.global_step,
            "best_top1": best_top1,
            "nonfinite_run": state.nonfinite_run,
            "data_counts": counts,
            "epoch_progress": progress,
        }
        self.files.save_last(self.checkpoint(record, **fields))


def _continue_epoch(progress, config, ctx, sampler, say) -> EpochState:
    """The state of an epoch resumed at a checkpoint within it; the sampler starts after the
    images already done."""
    sampler.start_at(progress["samples"])
    if progress["world_size"] == ctx.world_size and progress["batch_size"] == config.batch_size:
        return EpochState.from_tensor(progress["ranks"][ctx.rank])
    say(
        f"notice: the checkpoint was taken with {progress['world_size']} process(es) × "
        f"batch_size {progress['batch_size']}: the epoch goes on with its remaining images, "
        "shared out anew, so the run will not repeat an unbroken one exactly"
    )
    saved = EpochState.from_tensor(progress["ranks"][0])
    return EpochState(
        global_step=saved.global_step, skipped=saved.skipped, nonfinite_run=saved.nonfinite_run
    )


def _restore(state, model, optimizer, precision, ema) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if precision.scaler is not None and state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.module.load_state_dict(state.get("model_ema") or state["model"])
    restore_rng(state["rng"])


def _loaders(config: TrainConfig, ctx: distributed.DistContext, train_set, val_set) -> tuple:
    """Training batches in an order from (seed, epoch) dealt to the processes, full batches
    only, resumable within an epoch; validation shards that together hold every image once.
    Under DDP the loaders run in lockstep: broken images are judged by the collective check,
    and every process runs as many training steps whatever its broken files."""
    lockstep = ctx.enabled
    train_sampler = ResumableSampler(train_set, ctx.rank, ctx.world_size, config.seed)
    train_loader = build_loader(
        train_set, config, train=True, sampler=train_sampler, lockstep=lockstep
    )
    val_sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
    val_loader = build_loader(val_set, config, train=False, sampler=val_sampler, lockstep=lockstep)
    if len(train_loader) == 0:
        raise TwinsError(
            f"{len(train_set)} training images make no full batch of {config.batch_size} per "
            f"process × {ctx.world_size}: lower batch_size or add images"
        )
    return train_loader, val_loader


def _check_same_run(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    saved = state.get("config", {})
    current = config.to_dict()
    changed = [k for k in _ARCH_KEYS if k in saved and saved[k] != current[k]]
    if changed:
        key = changed[0]
        raise TwinsError(
            f"{path} is a run with {key}={saved[key]!r}, not {current[key]!r}: "
            "give another --output for a new run, or delete that folder"
        )


def _check_same_start(ctx: distributed.DistContext, state: dict | None, path: Path) -> None:
    """Every process must resume from the same checkpoint: on several nodes, the output folder
    has to be one they all see."""
    if not ctx.enabled:
        return
    progress = (state or {}).get("epoch_progress") or {}
    row = torch.tensor(
        [
            state is not None,
            state["epoch"] if state else -1,
            state["global_step"] if state else -1,
            progress.get("samples", -1),
        ],
        dtype=torch.float64,
        device=ctx.device,
    )
    rows = distributed.all_gather_rows(row)
    if not bool((rows == rows[0]).all()):
        found = "; ".join(
            f"rank {rank}: " + (f"step {int(r[2])}" if r[0] else "none")
            for rank, r in enumerate(rows.tolist())
        )
        raise TwinsError(
            f"the processes found different checkpoints at {path} ({found}): put train_url on a "
            "file system that every node shares"
        )


def _header(config, model, ctx, precision, train_set, val_set, global_batch, lr) -> list[str]:
    params = sum(p.numel() for p in model.parameters())
    scaled = (
        f"base_lr {config.base_lr:g} × {global_batch} / lr_base_size {config.lr_base_size}"
        if config.lr_base_size
        else "base_lr as given"
    )
    cooldown = f" + {config.cooldown_epochs} cooldown" if config.cooldown_epochs else ""
    return [
        f"model: {model.arch}, {params / 1e6:.2f} M parameters, {config.num_classes} classes",
        f"device: {ctx.device} × {ctx.world_size} process(es), {precision.describe()}",
        f"data: {config.data_url} ({len(train_set)} train, {len(val_set)} val images)",
        f"batch: global {global_batch} = {config.batch_size} per device × {ctx.world_size} "
        f"× {config.accumulation_step} accumulation; lr {lr:.3g} ({scaled})",
        f"epochs: {config.total_epochs} = {config.epochs}{cooldown}, "
        f"warmup {config.warmup_length} from {config.warmup_lr:g}, "
        f"{config.lr_scheduler} to min_lr {config.min_lr:g}; output {config.train_url}",
    ]


def _summary(record: dict[str, Any], total_epochs: int, is_best: bool) -> str:
    text = (
        f"epoch {record['epoch']}/{total_epochs}  loss {record['train_loss']:.4f}  "
        f"lr {record['lr']:.2e}"
    )
    if "val_top1" in record:
        text += (
            f"  val top1 {record['val_top1']:.2f}  top5 {record['val_top5']:.2f}  "
            f"loss {record['val_loss']:.4f}"
        )
    if "ema_val_top1" in record:
        text += f"  ema top1 {record['ema_val_top1']:.2f}"
    text += f"  {record['epoch_seconds']:.1f}s  {record['images_per_s']:.0f} img/s"
    if record["skipped_steps"]:
        text += f"  {record['skipped_steps']} non-finite steps skipped"
    if record.get("images_skipped"):
        text += f"  {record['images_skipped']} unreadable images left out so far"
    return text + ("  *best*" if is_best else "")


def _printer(enabled: bool):
    def say(text: str) -> None:
        if enabled:
            print(text, flush=True)

    return say
