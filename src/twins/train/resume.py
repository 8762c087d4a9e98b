"""Exact resume: the checkpoint of a run, how it is written, read and restored, and the checks
that a checkpoint found in the output folder belongs to the run being started.

The promise: a run killed at any moment (SIGKILL included, also while it writes a checkpoint)
and started again with the same command ends exactly as the unbroken run — the same weights,
optimizer, EMA, metrics.jsonl and best.pt — given the same number of processes and batch size,
on the CPU or on GPUs with deterministic kernels. What makes it hold:
- `last.pt` is written at the end of every epoch and, with `save_every_steps`, every N optimizer
  steps within one; atomically (`twins.atomic`), so a kill mid-write leaves the previous one.
- It holds the model, the optimizer, the loss scaler, the EMA, the random states, and the
  `TrainState` (epoch, step, best top-1, non-finite run, data counts), plus, within an epoch,
  every process's `EpochProgress` and how many images of the epoch's order were done.
- No random draw depends on how the run got where it is: the data order comes from
  (seed, epoch) (`ResumableSampler`), each image's augmentation from (seed, epoch, index)
  (`SampleSeededDataset`), the drop path and Mixup draws from (seed, epoch, rank, batch), and
  the learning rate is a function of the step.
- metrics.jsonl and TensorBoard drop what was written after the checkpoint (`RunLog`).

A checkpoint is a dict of plain types and tensors (`torch.load(weights_only=True)` opens it):
    {"format": "twins-checkpoint", "version": 1, "model", "model_ema", "meta" (with "run", what
     made the run: `twins.train.run_record`), "optimizer",
     "scaler", "rng", "data": {"seed", "epoch"}, "config", "metrics" (the last epoch's record),
     "epoch" (epochs done), "global_step", "best_score" (the best val score: the task's, top-1 for
     classification), "best_weights" ("raw" or "ema": which weights scored it), "nonfinite_run", "data_counts",
     "trackers" (each tracker's run id: `twins.train.trackers`),
     "epoch_progress" (only within an epoch: "epoch", "batches", "samples", "world_size",
     "batch_size", "ranks" (every process's EpochProgress row))}
best.pt keeps what using the weights needs, not the optimizer: it is written at the epoch whose
better val score of the raw and the EMA weights is the run's highest, and its "model" holds the
weights that scored it (the EMA weights where "best_weights" is "ema"; "model_ema" holds them
too), so every reader of "model" (eval, predict, export, load_model) gets them. `meta` describes the model and
how evaluation prepares its images, so the weights can be used without the config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from twins.atomic import remove_temporaries, save_torch
from twins.console import debug
from twins.errors import TwinsError
from twins.train import distributed
from twins.train.rng import capture_rng, restore_rng
from twins.train.state import EpochProgress, TrainState
from twins.train.trainer import Trainer
from twins.weights import model_metadata
from twins.weights.torch_pth import load_torch_object

FORMAT = "twins-checkpoint"
VERSION = 1
_BEST_KEYS = ("format", "version", "model", "model_ema", "meta", "epoch", "global_step")
_BEST_KEYS += ("config", "best_score", "best_weights", "metrics")

# Config keys that make another model: a checkpoint with other values is another run.
MODEL_KEYS = ("arch", "model_args", "num_classes")
# Config keys that change nothing a run computes: a resumed run may change them freely.
RUN_KEYS = frozenset(
    {"data_url", "train_url", "set", "pretrained", "num_parallel_workers", "device_target"}
    | {"keep_checkpoint_max", "save_every", "save_every_steps", "eval_every", "log_every"}
    | {"max_nonfinite_steps", "cache_dir", "cache_size", "loggers", "mlflow_tracking_uri"}
    | {"mlflow_experiment", "wandb_project", "wandb_entity"}
)


def checkpoint(
    trainer: Trainer,
    class_names: list[str] | None,
    record: dict[str, Any],
    task_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of the run as it stands (epoch_progress is added within an epoch);
    `task_metadata` (the task's `metadata`) goes into its "meta" over the model's.
    Non-finite weights are refused here, in every process, so that all stop together and no
    diverged weights replace good ones."""
    state, config = trainer.state, trainer.config
    check_finite(trainer.module.state_dict(), f"the model at step {state.step}")
    if trainer.ema is not None:
        check_finite(trainer.ema.module.state_dict(), f"the EMA model at step {state.step}")
    saved = {
        "format": FORMAT,
        "version": VERSION,
        "model": contiguous(trainer.module.state_dict()),
        "meta": model_metadata(trainer.module, class_names) | (task_metadata or {}),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.precision.scaler.state_dict() if trainer.precision.scaler else None,
        "rng": capture_rng(),
        "data": {"seed": config.seed, "epoch": state.epoch},
        "config": config.to_dict(),
        "metrics": record,
        "epoch": state.epoch,
        "global_step": state.step,
        "best_score": state.best_score,
        "best_weights": state.best_weights,
        "nonfinite_run": state.nonfinite_run,
        "data_counts": dict(state.data_counts),
        "trackers": dict(state.trackers),
    }
    if trainer.ema is not None:
        saved["model_ema"] = contiguous(trainer.ema.module.state_dict())
    return saved


def contiguous(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The weights in the default memory format, as a run without `channels_last` holds them:
    what reads a checkpoint (safetensors, ONNX export, `load_model`) gets the same tensors
    either way. Restoring copies the values into the model's own layout."""
    return {k: v.contiguous() if torch.is_tensor(v) else v for k, v in state_dict.items()}


def within_epoch(
    trainer: Trainer,
    class_names: list[str] | None,
    record: dict[str, Any],
    task_metadata: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A checkpoint within the current epoch: every process's `EpochProgress` (a collective) and
    the epoch's place in the data order; None on the processes that do not write."""
    config = trainer.config
    progress = trainer.state.progress.to_row().to(trainer.precision.device)
    ranks = distributed.all_gather_rows(progress)
    saved = checkpoint(trainer, class_names, record, task_metadata)
    if not distributed.is_main_process():
        return None
    world = ranks.shape[0]
    saved["epoch_progress"] = {
        "epoch": trainer.state.epoch,
        "batches": trainer.state.progress.batches,
        "samples": trainer.state.progress.batches * config.batch_size * world,
        "world_size": world,
        "batch_size": config.batch_size,
        "ranks": ranks.cpu(),
    }
    return saved


def find(
    files: CheckpointFiles, config: Any, device: torch.device
) -> tuple[dict[str, Any] | None, list[str]]:
    """The checkpoint a run on `files`' folder goes on from (None for a fresh run) and the
    notices to print: refuses another model's run, checks that every process found the same
    one (a collective), and removes the temporaries of writes a killed process left."""
    saved = load_checkpoint(files.last) if files.last.is_file() else None
    notices = check_same_run(saved, config, files.last) if saved else []
    check_same_start(saved, files.last, device)
    if distributed.is_main_process():
        files.remove_temporaries()
    return saved, notices


def restore(saved: dict[str, Any], trainer: Trainer, notices: list[str]) -> int:
    """Put a checkpoint back into the trainer (weights, optimizer, scaler, EMA, random states,
    state). Returns how many images of the current epoch's order all processes had done (0 at
    an epoch's end): the epoch goes on after them. Notices to print are added to `notices`."""
    trainer.module.load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    if trainer.precision.scaler is not None and saved.get("scaler"):
        trainer.precision.scaler.load_state_dict(saved["scaler"])
    if trainer.ema is not None:
        trainer.ema.module.load_state_dict(saved.get("model_ema") or saved["model"])
    restore_rng(saved["rng"])
    trainer.state = TrainState(
        epoch=saved["epoch"],
        step=saved["global_step"],
        best_score=saved.get("best_score", saved.get("best_top1", -math.inf)),
        best_weights=saved.get("best_weights", "raw"),
        nonfinite_run=saved.get("nonfinite_run", 0),
        data_counts=dict(saved.get("data_counts") or {}),
        trackers=dict(saved.get("trackers") or {}),
    )
    progress = saved.get("epoch_progress")
    if progress is None:
        return 0
    config, world = trainer.config, distributed.world_size()
    if progress["world_size"] == world and progress["batch_size"] == config.batch_size:
        trainer.state.progress = EpochProgress.from_row(progress["ranks"][distributed.rank()])
    else:  # shared out anew: the rest of the epoch's images, counts starting from nothing
        notices.append(
            f"notice: the checkpoint was taken with {progress['world_size']} process(es) × "
            f"batch_size {progress['batch_size']}: the epoch goes on with its remaining images, "
            "shared out anew, so the run will not repeat an unbroken one exactly"
        )
    return progress["samples"]


def describe(saved: dict[str, Any], path: str | Path) -> str:
    """One line saying where a resumed run goes on from."""
    progress = saved.get("epoch_progress")
    if progress is not None:
        return (
            f"resuming from {path} within epoch {saved['epoch'] + 1} (step "
            f"{saved['global_step']}, {progress['samples']} of its images done)"
        )
    return f"resuming from {path} after epoch {saved['epoch']} (step {saved['global_step']})"


def check_same_run(saved: dict[str, Any], config: Any, path: Path) -> list[str]:
    """Refuse a checkpoint of another model; return a notice for each key whose change alters
    what the resumed run computes (base_lr, epochs, ...)."""
    before, now = saved.get("config", {}), config.to_dict()
    for key in MODEL_KEYS:
        if key in before and before[key] != now[key]:
            raise TwinsError(
                f"{path} is a run with {key}={before[key]!r}, not {now[key]!r}: give another "
                "output folder (train_url) for a new run, or delete that folder",
                argument="train_url",
            )
    _check_same_split(before, now, path)
    changed = [
        key
        for key in now
        if key not in RUN_KEYS
        and key not in MODEL_KEYS
        and key in before
        and before[key] != now[key]
    ]
    if not changed:
        return []
    shown = ", ".join(f"{key} {before[key]!r} → {now[key]!r}" for key in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return [
        f"notice: resuming {path} with another recipe ({shown}{more}): from step "
        f"{saved.get('global_step', 0)} the run computes what the new values say, not what an "
        "unbroken run of the old ones would"
    ]


def _check_same_split(before: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse a resume that would hold out other training images (`val_split` and the `seed`
    it is drawn from): the run would train on images it validated on."""
    if not (before.get("val_split") or now.get("val_split")):
        return
    for key in ("val_split", "seed"):
        if key in before and before[key] != now.get(key):
            raise TwinsError(
                f"{path} is a run with val_split={before.get('val_split')!r} drawn from "
                f"seed={before.get('seed')!r}; {key}={now.get(key)!r} would hold out other "
                f"training images: resume with {key}={before[key]!r}, or give another output "
                "folder (train_url) for a new run",
                argument="train_url",
            )


def check_same_start(saved: dict[str, Any] | None, path: Path, device: torch.device) -> None:
    """Every process must resume from the same checkpoint (a collective): on several nodes, the
    output folder has to be one they all see."""
    if distributed.world_size() == 1:
        return
    progress = (saved or {}).get("epoch_progress") or {}
    row = torch.tensor(
        [
            saved is not None,
            saved["epoch"] if saved else -1,
            saved["global_step"] if saved else -1,
            progress.get("samples", -1),
        ],
        dtype=torch.float64,
        device=device,
    )
    rows = distributed.all_gather_rows(row)
    if not bool((rows == rows[0]).all()):
        found = "; ".join(
            f"rank {rank}: " + (f"step {int(r[2])}" if r[0] else "none")
            for rank, r in enumerate(rows.tolist())
        )
        raise TwinsError(
            f"the processes found different checkpoints at {path} ({found}): put train_url on a "
            "file system that every node shares",
            argument="train_url",
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read without unpickling objects, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise TwinsError(f"checkpoint {path} not found: give the path of a .pt file")
    saved = load_torch_object(path)  # a truncated or foreign file: one TwinsError saying so
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise TwinsError(f"{path} is not a twins training checkpoint: give a file it wrote")
    if saved.get("version", 0) > VERSION:
        raise TwinsError(f"{path} was written by a newer twins: upgrade to read it")
    return saved


def check_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to write weights that have become NaN or infinite: they would replace good ones."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TwinsError(
                f"{what} holds non-finite values ({name}): the run diverged; "
                "lower base_lr or raise warmup_length and resume from the last checkpoint"
            )


class CheckpointFiles:
    """The checkpoint files of one output folder: last.pt (for resuming), best.pt (highest val
    score of the raw or EMA weights, those weights as "model"), epoch_NNNN.pt every
    `save_every` epochs (iter_NNNNNNN.pt every `save_every` steps in a run counted in
    iterations), the newest `keep_checkpoint_max` kept.
    Only the main process writes."""

    def __init__(self, folder: str | Path, keep_max: int, save_every: int) -> None:
        self.folder = Path(folder)
        self.keep_max, self.save_every = keep_max, save_every

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def epoch_path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:04d}.pt"

    def step_path(self, step: int) -> Path:
        return self.folder / f"iter_{step:07d}.pt"

    def save(self, saved: dict[str, Any], is_best: bool, at_step: bool = False) -> None:
        """At the end of an epoch (or, `at_step`, at an iteration run's evaluation): best.pt
        when `is_best`, the epoch file every `save_every` epochs (iter_NNNNNNN.pt every
        `save_every` steps), then last.pt. last.pt goes last: a run killed before it is written
        goes on from the previous last.pt and writes the others again."""
        if is_best:
            best = {k: saved[k] for k in _BEST_KEYS if k in saved}
            if saved.get("best_weights") == "ema":  # the weights that scored, where all look
                best["model"] = saved["model_ema"]
            save_torch(best, self.best)
            debug(f"wrote {self.best} (the best val score so far)")
        number = saved["global_step"] if at_step else saved["epoch"]
        if self.save_every and number % self.save_every == 0:
            save_torch(saved, self.step_path(number) if at_step else self.epoch_path(number))
            self._prune()
        self.save_last(saved)

    def save_last(self, saved: dict[str, Any]) -> None:
        """last.pt only (within an epoch)."""
        save_torch(saved, self.last)
        debug(f"wrote {self.last} (epoch {saved['epoch']}, step {saved['global_step']})")

    def remove_temporaries(self) -> None:
        """Temporary files of writes that a killed process did not finish."""
        remove_temporaries(self.folder)

    def _prune(self) -> None:
        for pattern in ("epoch_*.pt", "iter_*.pt"):
            kept = sorted(self.folder.glob(pattern))
            for path in kept[: max(0, len(kept) - self.keep_max)]:
                path.unlink(missing_ok=True)
