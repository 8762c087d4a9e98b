"""The fit loop: build everything from the config, resume if the output folder holds a run,
then train, evaluate and checkpoint epoch after epoch (dinov2's `do_train`, DeiT's `main`).

Exact resume, and what makes it hold, is `twins.train.resume`. The output folder is locked
while the run trains (`twins.train.lock`); an output URL is written through a local staging
folder, uploaded at every checkpoint (`twins.train.mirror`). SIGTERM and Ctrl-C end the run
after the current optimizer step with last.pt written (`twins.train.stop`). `pretrained`
initialises the weights of a fresh run only, dropping a head of another size. The output
folder also keeps what the run printed (`run.log`, `twins.train.run_log`) and what made it
(`run.json`, `twins.train.run_record`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from twins import storage
from twins.config import TrainConfig, save_config
from twins.console import default_console, progress_shown
from twins.data import build_loader
from twins.errors import TwinsError
from twins.seeds import seed_everything
from twins.train import distributed, resume
from twins.train.engine import train_one_epoch
from twins.train.lock import lock_output
from twins.train.metrics import RunLog
from twins.train.mirror import OutputMirror
from twins.train.precision import hardware_notice
from twins.train.report import done_line, eval_summary, header, printer, summary
from twins.train.run_log import RunLogFile, recording, resume_line
from twins.train.run_record import run_record, write_run_json
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import training_sampler
from twins.train.speed import to_memory_format
from twins.train.state import EpochProgress
from twins.train.stop import StopSignals, raise_stop, signal_name
from twins.train.task import Task
from twins.train.threads import compute_threads, threads_set
from twins.train.trackers import TrackerStart, check_loggers, open_trackers
from twins.train.trainer import Trainer


def fit(config: TrainConfig, task: Task, *, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train per `config` the `task` (`twins.tasks.task_for(config)`); returns the last epoch's record (val_top1, ...) plus `best_score`
    (the best val score of the task: top-1, mIoU, box AP), the same under its own name
    (`best_top1`, ...), `best_weights` ("raw" or "ema": which scored it; best.pt holds them)
    and `output`.
    `stop_after_epoch` ends the process's work after that epoch (1-based) without finishing the
    run, which the same call resumes later (time-limited jobs, tests)."""
    check_output_outside_data(config.train_url, config.data_url, task.data_folders)
    check_loggers(config.loggers)
    ctx = distributed.setup(config.device_target)
    mirror = OutputMirror(config.train_url, say=printer(ctx.is_main))
    try:
        with (
            default_console(),
            recording(ctx.is_main) as journal,
            lock_output(mirror.local, ctx.device),
            StopSignals() as stop,
        ):
            if ctx.local_rank == 0:  # one process per machine fills its staging folder
                mirror.pull()
            distributed.barrier()
            try:
                with threads_set(compute_threads(config)):
                    result = _fit(config, task, ctx, stop, stop_after_epoch, mirror, journal)
            except BaseException:
                if ctx.is_main:
                    mirror.sync()  # what a stop or an error left: the checkpoint of its step
                raise
            if ctx.is_main:
                mirror.finish()
            return result
    finally:
        distributed.cleanup()


def check_output_outside_data(
    train_url: str, data_url: str, data_folders: Sequence[str] = ()
) -> None:
    """Refuse an output folder inside one of the folders of the task's data layout
    (`Task.data_folders`: ImageFolder's train/ and val/, ADE20K's images/ and annotations/,
    COCO's train/, val/ and annotations/): its checkpoints/ and tensorboard/ would become data
    there (classes, images, annotation files), and the next run would fail on them. Anywhere
    else is harmless, the data set inside the output folder too (`twins demo` keeps it in
    `DIR/data`). URLs are not compared."""
    if storage.is_remote(train_url) or storage.is_remote(data_url):
        return
    output = Path(train_url).expanduser().resolve()
    data = Path(data_url).expanduser().resolve()
    for folder in data_folders:
        if output.is_relative_to(data / folder):
            others = " and ".join(str(data / name) for name in data_folders)
            raise TwinsError(
                f"output folder {train_url} is inside the data set's {folder}/ folder "
                f"{data / folder}: its files would become data there; give an output folder "
                f"outside {others}",
                argument="train_url",
            )


def build_model(
    config: TrainConfig, task: Task, pretrained: str | None = None, **overrides: Any
) -> nn.Module:
    """The config's model (`model_arguments`), with what the task's pipeline sets
    (`Task.model_arguments`: a detector's input scale and padding)."""
    arguments = {**model_arguments(config), **task.model_arguments(config), **overrides}
    return task.create_model(config.arch, pretrained=pretrained, **arguments)


def model_arguments(config: TrainConfig) -> dict[str, Any]:
    """`create_model` arguments of the config's `arch`: `model_args`, `num_classes` and
    `drop_path_rate`; under the seed's semantics the seed's (MindSpore's) tanh GELU unless
    model_args says."""
    arguments = dict(config.model_args)
    if config.semantics == "seed":
        arguments.setdefault("act_layer", "gelu_tanh")
    return arguments | {"num_classes": config.num_classes, "drop_path_rate": config.drop_path_rate}


def _fit(
    config: TrainConfig,
    task: Task,
    ctx: distributed.DistContext,
    stop: StopSignals,
    stop_after_epoch: int | None,
    mirror: OutputMirror,
    journal: RunLogFile | None,
) -> dict[str, Any]:
    run = FitRun(config, task, ctx, stop, mirror)
    _record(run, journal)
    first_epoch = run.state.epoch
    try:
        for epoch_index in range(first_epoch, run.total_epochs):
            run.train_epoch(epoch_index)
            if stop_after_epoch is not None and epoch_index + 1 >= stop_after_epoch:
                break
        result = run.finish(first_epoch)
        if run.state.epoch >= run.total_epochs:  # the trackers' runs end with the run's
            run.log.finish(result)
    finally:
        run.log.close()
    return result


def _record(run: FitRun, journal: RunLogFile | None) -> None:
    """The record of the run on the main process, the one that writes files (`journal` is
    None elsewhere): run.json, run.log and the checkpoints' `meta["run"]`."""
    if journal is None:
        return
    splits = {"train": run.train_set, "val": run.val_set}
    record = run_record(run.config, run.ctx.device, run.ctx.world_size, splits, run.saved)
    run.task_metadata["run"] = record
    write_run_json(run.output, record)
    journal.open(run.output, run.saved and resume_line(run.saved), record["started"])


class FitRun:
    """One run: everything built from the config (data, model, trainer, checkpoint files, the
    log), resumed from the output folder's last.pt where it holds one, and the steps the loop
    takes: train an epoch, evaluate (per epoch, or every `eval_every` iterations of a run
    counted in iterations, mmseg's IterBasedRunner), checkpoint, stop on a signal."""

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        ctx: distributed.DistContext,
        stop: StopSignals,
        mirror: OutputMirror,
    ) -> None:
        self.config, self.task, self.ctx, self.stop, self.mirror = config, task, ctx, stop, mirror
        self.say = printer(ctx.is_main)
        self.output = mirror.local
        self.files = resume.CheckpointFiles(
            self.output / "checkpoints", config.keep_checkpoint_max, config.save_every
        )
        self.saved, notices = resume.find(self.files, config, ctx.device)  # last.pt, or None
        # The data first: fail fast on a bad folder.
        self.train_set, self.val_set, self.class_names = task.datasets(config)
        self.task_metadata = {"task": task.name} | task.metadata(config, self.train_set)
        self.trainer = self._build_trainer()
        self.state = self.trainer.state
        self.first_epoch = self.state.epoch
        self.mixup = task.batch_mix(config)
        self.to_device = task.to_device(config)
        if self.mixup is not None and config.batch_size % 2:
            raise TwinsError(f"mixup/cutmix need an even batch_size, not {config.batch_size}")
        # A run counted in iterations evaluates every `eval_every` and keeps a checkpoint every
        # `save_every` iterations, and stops at `max_iters`, within an epoch.
        self.iterations = config.max_iters if config.counts_iterations else 0
        steps = self.steps_per_epoch
        self.total_epochs = (
            math.ceil(self.iterations / steps) if self.iterations else config.total_epochs
        )
        self.record: dict[str, Any] = dict(self.saved.get("metrics") or {}) if self.saved else {}
        self.evaluation: dict[str, Any] = {}  # the latest evaluation of an iteration run
        self.best_at_epoch_end = False  # an evaluation at an epoch's last step found a new best
        self.progress = ctx.is_main and progress_shown()
        self.log = self._open_log(notices)

    def _build_trainer(self) -> Trainer:
        """The model (seeded: the same initial weights on every rank and every try), the loaders
        and the trainer, restored from the checkpoint found."""
        config, task, ctx, saved = self.config, self.task, self.ctx, self.saved
        seed_everything(config.seed)
        # A resumed run takes its activation from the checkpoint: `pretrained` may have chosen it.
        act_layer = ((saved or {}).get("meta") or {}).get("act_layer")
        model = build_model(
            config,
            task,
            pretrained=None if saved else config.pretrained,
            **({"act_layer": act_layer} if act_layer else {}),
        ).to(ctx.device)
        to_memory_format(model, config)  # before DDP, which lays its buckets out as the weights
        self.train_samples = SampleSeededDataset(self.train_set, config.seed)
        self.train_loader, self.val_loader = training_loaders(
            config, ctx, task, self.train_samples, self.val_set
        )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accumulation_step)
        trainer = Trainer(
            config,
            _parallel(synchronised_batchnorm(model, task, ctx), ctx),
            self.steps_per_epoch,
            world_size=ctx.world_size,
            criterion=task.criterion(config),
        )
        trainer.state.epoch = config.start_epoch
        self.notices: list[str | None] = []
        self.samples_done = resume.restore(saved, trainer, self.notices) if saved else 0
        return trainer

    def _open_log(self, notices: list[str | None]) -> RunLog:
        """config.yaml, the run's log, and the lines that open the run."""
        config, ctx, state = self.config, self.ctx, self.state
        if ctx.is_main:
            save_config(config, self.output / "config.yaml", keys=self.task.reads)
        trackers = self._open_trackers() if ctx.is_main else []
        log = RunLog(
            self.output,
            ctx.is_main,
            resume_epoch=state.epoch,
            resume_step=state.step,
            score=(self.task.score, self.task.score_label),
            trackers=trackers,
        )
        notices += self.notices
        notices += [hardware_notice(config, self.trainer.precision), distributed.restart_notice()]
        opening = header(config, self.trainer, ctx, self.train_set, self.val_set)
        for line in [*filter(None, notices), *opening]:
            self.say(line)
        if self.saved:
            self.say(resume.describe(self.saved, self.mirror.shown(self.files.last)))
        return log

    def _open_trackers(self) -> list:
        """The trackers of `loggers`, going on with the checkpoint's runs; their run ids go
        into the next checkpoint."""
        config, state, shown = self.config, self.state, self.mirror.shown(self.output)
        start = TrackerStart(
            folder=self.output,
            # The run's identity in a tracker: its URL, or its folder's absolute path.
            output=shown if self.mirror.remote else str(Path(shown).resolve()),
            resumed=self.saved is not None,
            resume_step=state.step,
            params={k: v for k, v in config.to_dict().items() if k in self.task.reads},
        )
        trackers, state.trackers = open_trackers(config, start, state.trackers, self.say)
        return trackers

    def data_counts(self) -> dict[str, int]:
        loaders = (self.train_loader, self.val_loader)
        return _data_counts(loaders, self.saved, self.ctx.device)

    def save_within_epoch(self) -> None:
        self.state.data_counts = self.data_counts()
        checkpoint = resume.within_epoch(
            self.trainer, self.class_names, self.record, self.task_metadata
        )
        if checkpoint is not None:
            self.files.save_last(checkpoint)
            self.mirror.sync()

    def stop_if_asked(self, within_epoch: bool) -> None:
        number = self.stop.requested()
        if number is None:
            return
        if within_epoch:
            self.save_within_epoch()
        self.say(
            f"stopped by {signal_name(number)} after step {self.state.step}: "
            f"{self.mirror.shown(self.files.last)} holds the "
            "run; start the same command again to resume it"
        )
        raise_stop(number)

    def evaluate_at_step(self, last_of_epoch: bool) -> None:
        """An iteration run's evaluation; its checkpoint, unless the epoch's end writes it."""
        state, task = self.state, self.task
        self.evaluation = self.evaluate()
        self.trainer.model.train()  # the epoch's remaining steps train in training mode
        is_best = self.note_best(self.evaluation)
        self.log.log(
            {"kind": "eval", "epoch": state.epoch + 1, "step": state.step} | self.evaluation
        )
        weights = is_best and state.best_weights
        self.say(eval_summary(self.evaluation, state.step, self.iterations, weights, task.shown))
        if last_of_epoch:  # the epoch's end writes the checkpoint
            self.best_at_epoch_end = is_best
            return
        state.data_counts = self.data_counts()
        checkpoint = resume.within_epoch(
            self.trainer, self.class_names, self.record | self.evaluation, self.task_metadata
        )
        if checkpoint is not None:
            self.files.save(checkpoint, is_best, at_step=True)
            self.mirror.sync()

    def after_step(self, trainer: Trainer, last_of_epoch: bool) -> None:
        """Checks of the data (under DDP, every log_every steps), evaluations of an iteration
        run, checkpoints within the epoch (every save_every_steps steps but the epoch's last)
        and stop requests."""
        config, state, iterations = self.config, self.state, self.iterations
        if self.ctx.enabled and state.step % config.log_every == 0:
            distributed.check_health_together(self.train_set, self.ctx.device)
        if iterations and (state.step % config.eval_every == 0 or state.step == iterations):
            self.evaluate_at_step(last_of_epoch)
        if last_of_epoch or state.step == iterations:
            return
        every = config.save_every_steps
        if every and state.step % every == 0:
            self.save_within_epoch()
        self.stop_if_asked(within_epoch=True)

    def evaluate(self) -> dict[str, Any]:
        return _evaluate(
            self.task, self.trainer, self.val_loader, self.val_set, self.ctx, self.progress
        )

    def note_best(self, evaluation: dict[str, Any]) -> bool:
        """Whether `evaluation` scores a new best (then kept as the state's best)."""
        score, weights = _best_of(evaluation, self.task.score)
        is_best = score > self.state.best_score
        if is_best:
            self.state.best_score, self.state.best_weights = score, weights
        return is_best

    def train_epoch(self, epoch_index: int) -> None:
        """One epoch: its steps, its evaluation (of an epoch run), its checkpoint and line."""
        config, state, ctx, iterations = self.config, self.state, self.ctx, self.iterations
        epoch = epoch_index + 1
        self.train_samples.set_epoch(epoch_index)
        self.train_loader.set_epoch(epoch_index)  # the sampler's order too, from its start
        self.train_loader.sampler.start_at(self.samples_done)
        self.samples_done = 0
        stats = train_one_epoch(
            self.trainer, self.train_loader, to_device=self.to_device, mixup=self.mixup,
            log=self.log.log, after_step=self.after_step, progress=self.progress,
            stop_at_step=iterations or None,
        )  # fmt: skip
        self.record = record = _epoch_record(epoch, stats, self.trainer, ctx.world_size)
        is_best, self.best_at_epoch_end = self.best_at_epoch_end, False
        if not iterations and (epoch % config.eval_every == 0 or epoch == self.total_epochs):
            record |= self.evaluate()
            is_best = self.note_best(record)
        state.epoch, state.progress = epoch, EpochProgress()
        state.data_counts = self.data_counts()
        record |= state.data_counts
        # Logged before the checkpoint: a kill between the two repeats the epoch, whose line
        # the resumed run drops and writes again.
        self.log.log(record)
        checkpoint = resume.checkpoint(
            self.trainer, self.class_names, record | self.evaluation, self.task_metadata
        )
        if ctx.is_main:
            self.files.save(checkpoint, is_best, at_step=bool(iterations))
        self.log.end_epoch()
        if ctx.is_main:
            self.mirror.sync()
        weights = is_best and state.best_weights
        self.say(summary(record, self.total_epochs, weights, self.task.shown))
        if epoch == self.first_epoch + 1:
            self.warn_of_unread_classes()
        distributed.barrier()
        self.stop_if_asked(within_epoch=False)

    def warn_of_unread_classes(self) -> None:
        """After the first epoch: the classes none of whose images could be read. A data set of
        the toolkit knows them; other data sets (a user's own) do not say."""
        judge = getattr(self.train_set, "unreadable_classes", None)
        unseen = judge() if judge is not None else []
        if unseen and self.ctx.is_main:  # each process judges the images it read: the main's
            more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
            self.say(
                f"warning: no image of class {', '.join(unseen[:5])}{more} in "
                f"{self.train_set.root} could be read: the model has a class it never sees; "
                "repair or remove the broken files (the warnings above name them)"
            )

    def finish(self, first_epoch: int) -> dict[str, Any]:
        """The run's result (and the line that ends it)."""
        state, task, shown = self.state, self.task, self.mirror.shown(self.output)
        if first_epoch >= self.total_epochs:
            length = (
                f"{self.iterations} iterations"
                if self.iterations
                else f"{self.total_epochs} epochs"
            )
            self.say(f"{shown} holds a finished run of {length}: nothing to train")
        record = self.record | self.evaluation
        self.say(done_line(record, state, shown, task.score, task.score_label), final=True)
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


def training_loaders(
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
