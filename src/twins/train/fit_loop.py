"""The fit loop: build everything from the config, resume if the output folder holds a run,
then train, evaluate and checkpoint epoch after epoch (dinov2's `do_train`, DeiT's `main`).

Exact resume, and what makes it hold, is `twins.train.resume`. The output folder is locked
while the run trains (`twins.train.lock`); an output URL is written through a local staging
folder, uploaded at every checkpoint (`twins.train.mirror`). SIGTERM and Ctrl-C end the run
after the current optimizer step with last.pt written (`twins.train.stop`). `pretrained`
initialises the weights of a fresh run only, dropping a head of another size.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from twins import storage
from twins.config import TrainConfig, save_config
from twins.data import build_loader
from twins.errors import TwinsError
from twins.models import create_model
from twins.seeds import seed_everything
from twins.tasks import Task, task_for
from twins.train import distributed, resume
from twins.train.engine import train_one_epoch
from twins.train.lock import lock_output
from twins.train.metrics import RunLog
from twins.train.mirror import OutputMirror
from twins.train.precision import hardware_notice
from twins.train.report import done_line, eval_summary, header, printer, summary
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import training_sampler
from twins.train.state import EpochProgress
from twins.train.stop import StopSignals, raise_stop, signal_name
from twins.train.trainer import Trainer


def fit(config: TrainConfig, *, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train per `config`; returns the last epoch's record (val_top1, ...) plus `best_score`
    (the best val score of the task: top-1, mIoU, box AP), the same under its own name
    (`best_top1`, ...), `best_weights` ("raw" or "ema": which scored it; best.pt holds them)
    and `output`.
    `stop_after_epoch` ends the process's work after that epoch (1-based) without finishing the
    run, which the same call resumes later (time-limited jobs, tests)."""
    check_output_outside_data(config.train_url, config.data_url)
    ctx = distributed.setup(config.device_target)
    mirror = OutputMirror(config.train_url, say=printer(ctx.is_main))
    try:
        with lock_output(mirror.local, ctx.device), StopSignals() as stop:
            if ctx.local_rank == 0:  # one process per machine fills its staging folder
                mirror.pull()
            distributed.barrier()
            try:
                result = _fit(config, ctx, stop, stop_after_epoch, mirror)
            except BaseException:
                if ctx.is_main:
                    mirror.sync()  # what a stop or an error left: the checkpoint of its step
                raise
            if ctx.is_main:
                mirror.finish()
            return result
    finally:
        distributed.cleanup()


def check_output_outside_data(train_url: str, data_url: str) -> None:
    """Refuse an output folder inside the data set's train/ or val/ folder: its checkpoints/ and
    tensorboard/ would become classes (or files of one) there, and the next run would fail on
    them. Anywhere else is harmless (ImageFolder reads only train/ and val/), the data set
    inside the output folder too (`twins demo` keeps it in `DIR/data`). URLs are not compared."""
    if storage.is_remote(train_url) or storage.is_remote(data_url):
        return
    output = Path(train_url).expanduser().resolve()
    data = Path(data_url).expanduser().resolve()
    for split in ("train", "val"):
        if output.is_relative_to(data / split):
            raise TwinsError(
                f"output folder {train_url} is inside the data set's {split}/ folder "
                f"{data / split}: its files would become a class there; give an output folder "
                f"outside {data / 'train'} and {data / 'val'}",
                argument="train_url",
            )


def build_model(config: TrainConfig, pretrained: str | None = None, **overrides: Any) -> nn.Module:
    """The config's model: `arch` with `model_args`, `num_classes` and `drop_path_rate`, and
    what the task's pipeline sets (`Task.model_arguments`); under the seed's semantics with the
    seed's (MindSpore's) tanh GELU unless model_args says."""
    arguments = {**config.model_args, **task_for(config).model_arguments(config), **overrides}
    if config.semantics == "seed":
        arguments.setdefault("act_layer", "gelu_tanh")
    return create_model(
        config.arch,
        pretrained=pretrained,
        num_classes=config.num_classes,
        drop_path_rate=config.drop_path_rate,
        **arguments,
    )


def _fit(
    config: TrainConfig,
    ctx: distributed.DistContext,
    stop: StopSignals,
    stop_after_epoch: int | None,
    mirror: OutputMirror,
) -> dict[str, Any]:
    say = printer(ctx.is_main)
    output = mirror.local
    files = resume.CheckpointFiles(
        output / "checkpoints", config.keep_checkpoint_max, config.save_every
    )
    saved, notices = resume.find(files, config, ctx.device)  # the run's last.pt, or None

    task = task_for(config)
    train_set, val_set, class_names = task.datasets(config)  # first: fail fast on a bad folder
    task_metadata = task.metadata(config, train_set)
    seed_everything(config.seed)  # the same initial weights on every rank and every try
    # A resumed run takes its activation from the checkpoint: `pretrained` may have chosen it.
    act_layer = ((saved or {}).get("meta") or {}).get("act_layer")
    model = build_model(
        config,
        pretrained=None if saved else config.pretrained,
        **({"act_layer": act_layer} if act_layer else {}),
    ).to(ctx.device)
    train_samples = SampleSeededDataset(train_set, config.seed)
    train_loader, val_loader = _loaders(config, ctx, task, train_samples, val_set)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulation_step)
    trainer = Trainer(
        config,
        _parallel(synchronised_batchnorm(model, task, ctx), ctx),
        steps_per_epoch,
        world_size=ctx.world_size,
        criterion=task.criterion(config),
    )
    trainer.state.epoch = config.start_epoch
    samples_done = resume.restore(saved, trainer, notices) if saved else 0
    state = trainer.state
    mixup = task.batch_mix(config)
    to_device = task.to_device(config)
    if mixup is not None and config.batch_size % 2:
        raise TwinsError(f"mixup/cutmix need an even batch_size, not {config.batch_size}")

    if ctx.is_main:
        save_config(config, output / "config.yaml")
    log = RunLog(output, ctx.is_main, resume_epoch=state.epoch, resume_step=state.step)
    notices += [hardware_notice(config, trainer.precision), distributed.restart_notice()]
    for line in [*filter(None, notices), *header(config, trainer, ctx, train_set, val_set)]:
        say(line)
    if saved:
        say(resume.describe(saved, mirror.shown(files.last)))

    record: dict[str, Any] = dict(saved.get("metrics") or {}) if saved else {}

    def save_within_epoch() -> None:
        state.data_counts = _data_counts((train_loader, val_loader), saved, ctx.device)
        checkpoint = resume.within_epoch(trainer, class_names, record, task_metadata)
        if checkpoint is not None:
            files.save_last(checkpoint)
            mirror.sync()

    def stop_if_asked(within_epoch: bool) -> None:
        number = stop.requested()
        if number is None:
            return
        if within_epoch:
            save_within_epoch()
        say(
            f"stopped by {signal_name(number)} after step {state.step}: "
            f"{mirror.shown(files.last)} holds the "
            "run; start the same command again to resume it"
        )
        raise_stop(number)

    # A run counted in iterations (mmseg's IterBasedRunner) evaluates every `eval_every` and
    # keeps a checkpoint every `save_every` iterations, and stops at `max_iters`, within an epoch.
    iterations = config.max_iters if config.counts_iterations else 0
    total_epochs = math.ceil(iterations / steps_per_epoch) if iterations else config.total_epochs
    evaluation: dict[str, Any] = {}  # the latest evaluation of an iteration run
    best_at_epoch_end = False  # an evaluation at an epoch's last step found a new best

    def evaluate_at_step(last_of_epoch: bool) -> None:
        nonlocal evaluation, best_at_epoch_end
        evaluation = _evaluate(task, trainer, val_loader, val_set, ctx, progress)
        trainer.model.train()  # the epoch's remaining steps train in training mode
        score, weights = _best_of(evaluation, task.score)
        is_best = score > state.best_score
        if is_best:
            state.best_score, state.best_weights = score, weights
        log.log({"kind": "eval", "epoch": state.epoch + 1, "step": state.step} | evaluation)
        say(eval_summary(evaluation, state.step, iterations, is_best and weights, task.shown))
        if last_of_epoch:  # the epoch's end writes the checkpoint
            best_at_epoch_end = is_best
            return
        state.data_counts = _data_counts((train_loader, val_loader), saved, ctx.device)
        checkpoint = resume.within_epoch(trainer, class_names, record | evaluation, task_metadata)
        if checkpoint is not None:
            files.save(checkpoint, is_best, at_step=True)
            mirror.sync()

    def after_step(trainer: Trainer, last_of_epoch: bool) -> None:
        """Checks of the data (under DDP, every log_every steps), evaluations of an iteration
        run, checkpoints within the epoch (every save_every_steps steps but the epoch's last)
        and stop requests."""
        if ctx.enabled and state.step % config.log_every == 0:
            distributed.check_health_together(train_set, ctx.device)
        if iterations and (state.step % config.eval_every == 0 or state.step == iterations):
            evaluate_at_step(last_of_epoch)
        if last_of_epoch or state.step == iterations:
            return
        every = config.save_every_steps
        if every and state.step % every == 0:
            save_within_epoch()
        stop_if_asked(within_epoch=True)

    progress = ctx.is_main and sys.stderr.isatty()
    first_epoch = state.epoch
    shown = mirror.shown(output)
    try:
        for epoch_index in range(first_epoch, total_epochs):
            epoch = epoch_index + 1
            train_samples.set_epoch(epoch_index)
            train_loader.set_epoch(epoch_index)  # the sampler's order too, from its start
            train_loader.sampler.start_at(samples_done)
            samples_done = 0
            stats = train_one_epoch(
                trainer, train_loader, to_device=to_device, mixup=mixup, log=log.log,
                after_step=after_step, progress=progress, stop_at_step=iterations or None,
            )  # fmt: skip
            record = _epoch_record(epoch, stats, trainer, ctx.world_size)
            is_best, best_at_epoch_end = best_at_epoch_end, False
            if not iterations and (epoch % config.eval_every == 0 or epoch == total_epochs):
                record |= _evaluate(task, trainer, val_loader, val_set, ctx, progress)
                score, weights = _best_of(record, task.score)
                is_best = score > state.best_score
                if is_best:
                    state.best_score, state.best_weights = score, weights
            state.epoch, state.progress = epoch, EpochProgress()
            state.data_counts = _data_counts((train_loader, val_loader), saved, ctx.device)
            record |= state.data_counts
            # Logged before the checkpoint: a kill between the two repeats the epoch, whose
            # line the resumed run drops and writes again.
            log.log(record)
            checkpoint = resume.checkpoint(trainer, class_names, record | evaluation, task_metadata)
            if ctx.is_main:
                files.save(checkpoint, is_best, at_step=bool(iterations))
            log.end_epoch()
            if ctx.is_main:
                mirror.sync()
            say(summary(record, total_epochs, is_best and state.best_weights, task.shown))
            # A data set of the toolkit knows which classes it could read none of; other data
            # sets (a user's own) do not say.
            judge = getattr(train_set, "unreadable_classes", None)
            unseen = judge() if judge is not None and epoch == first_epoch + 1 else []
            if unseen and ctx.is_main:  # each process judges the images it read: the main's
                say(
                    f"warning: no image of class {', '.join(unseen[:5])}"
                    f"{f' and {len(unseen) - 5} more' if len(unseen) > 5 else ''} in "
                    f"{train_set.root} could be read: the model has a class it never sees; "
                    "repair or remove the broken files (the warnings above name them)"
                )
            distributed.barrier()
            stop_if_asked(within_epoch=False)
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    finally:
        log.close()
    if first_epoch >= total_epochs:
        length = f"{iterations} iterations" if iterations else f"{total_epochs} epochs"
        say(f"{shown} holds a finished run of {length}: nothing to train")
    record |= evaluation
    say(done_line(record, state, shown, task.score, task.score_label))
    return {
        **record,
        "best_score": state.best_score,
        f"best_{task.score}": state.best_score,
        "best_weights": state.best_weights,
        "output": shown,
    }


def synchronised_batchnorm(model: nn.Module, task: Task, ctx: distributed.DistContext) -> nn.Module:
    """The model with SyncBatchNorm for its BatchNorms where the task's recipes have it (the
    segmentation heads: mmseg's SyncBN) and the processes train on GPUs (torch synchronises
    batch statistics on GPUs only; on CPUs each process normalises over its own batch).
    Parameter names are unchanged."""
    if not (task.sync_batchnorm and ctx.enabled and ctx.device.type == "cuda"):
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _parallel(model: nn.Module, ctx: distributed.DistContext) -> nn.Module:
    if not ctx.enabled:
        return model
    # The PEG's depthwise kernels (C, 1, 3, 3) get gradients whose strides differ from the
    # weights' only along the size-1 axis, where strides mean nothing; DDP warns regardless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _loaders(
    config: TrainConfig, ctx: distributed.DistContext, task: Task, train_set, val_set
) -> tuple:
    """Training batches in an order from (seed, epoch) dealt to the processes, full batches
    only, resumable within an epoch; validation shards that together hold every image once.
    Under DDP the loaders run in lockstep: broken images are judged by the collective check,
    and every process runs as many training steps whatever its broken files."""
    lockstep = ctx.enabled
    train_sampler = training_sampler(
        train_set, ctx.rank, ctx.world_size, config.seed, config.shuffle_block
    )
    train_loader = build_loader(
        train_set, config, train=True, sampler=train_sampler, lockstep=lockstep,
        stack=task.collate(train=True),
    )  # fmt: skip
    val_sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
    val_loader = build_loader(
        val_set, config, train=False, sampler=val_sampler, lockstep=lockstep,
        stack=task.collate(train=False),
    )  # fmt: skip
    if len(train_loader) == 0:
        raise TwinsError(
            f"{len(train_set)} training images make no full batch of {config.batch_size} per "
            f"process × {ctx.world_size}: lower batch_size or add images"
        )
    return train_loader, val_loader


def _evaluate(
    task: Task, trainer: Trainer, val_loader, val_set, ctx, progress: bool
) -> dict[str, Any]:
    """val_* of the raw weights and ema_val_* of the EMA weights, in one pass over the
    validation set (each batch through both), so each image and broken file is read once."""
    models = {"val": trainer.module}
    if trainer.ema is not None:
        models["ema_val"] = trainer.ema.module
    results = task.evaluate(models, val_loader, trainer.precision, progress=progress)
    if ctx.enabled:
        distributed.check_health_together(val_set, ctx.device)
    return {f"{name}_{k}": v for name, result in results.items() for k, v in result.items()}


def _best_of(record: dict[str, Any], score: str) -> tuple[float, str]:
    """The epoch's score for best.pt and the weights that made it: the better val `score` (the
    task's: top-1, mIoU, box AP) of the raw ("raw") and the EMA ("ema") weights; the raw ones
    on a tie."""
    if record.get(f"ema_val_{score}", -math.inf) > record[f"val_{score}"]:
        return record[f"ema_val_{score}"], "ema"
    return record[f"val_{score}"], "raw"


def _data_counts(loaders: tuple, saved: dict | None, device: torch.device) -> dict[str, int]:
    """Images left out as unreadable and converted to RGB since the run began: what every
    process's loaders (both splits) handed out, plus the counts before a resume."""
    names = ("skipped", "converted")
    counts = [sum(loader.counts[n] for loader in loaders) for n in names]
    counts = torch.tensor(counts, dtype=torch.float64)
    counts = distributed.all_reduce_sum(counts.to(device)).tolist()
    before = dict((saved or {}).get("data_counts") or {})
    return {
        f"images_{n}": int(c) + before.get(f"images_{n}", 0)
        for n, c in zip(names, counts, strict=True)
    }


def _epoch_record(epoch: int, stats: dict[str, Any], trainer: Trainer, world: int) -> dict:
    return {
        "kind": "epoch",
        "epoch": epoch,
        "step": trainer.state.step,
        "train_loss": stats["train_loss"],
        "lr": trainer.applied_lr,
        "skipped_steps": stats["skipped_steps"],
        "epoch_seconds": round(stats["seconds"], 3),
        "images_per_s": round(stats["trained_images"] * world / stats["seconds"], 1),
    }
