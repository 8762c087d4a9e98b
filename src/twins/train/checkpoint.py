"""Training checkpoints: atomic writes, safe loads, and which files a run keeps.

A checkpoint is a dict of plain types and tensors, so `torch.load(weights_only=True)` opens it
(no pickled objects):
    {"format": "twins-checkpoint", "version": 1, "model": state_dict, "model_ema": state_dict,
     "meta": {"arch", "model_args", "num_classes", "act_layer", "class_names"},
     "epoch": epochs done, "global_step", "optimizer", "scaler", "rng", "data": {"seed", "epoch"},
     "config", "best_top1", "metrics", "nonfinite_run", "data_counts",
     "epoch_progress": only in a last.pt written within an epoch (see `twins.train.fit`)}
Each write goes to a temporary file in the same folder, is flushed to disk, then renamed over
the target: a crash mid-write leaves the previous file intact (and a temporary file, which the
next run removes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from twins.errors import TwinsError

FORMAT = "twins-checkpoint"
VERSION = 1
# Only what using the weights needs: best.pt is for evaluation and deployment, not resuming.
_BEST_KEYS = ("format", "version", "model", "model_ema", "meta", "epoch", "global_step")
_BEST_KEYS += ("config", "best_top1", "metrics")


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read without unpickling objects, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise TwinsError(f"checkpoint {path} not found: give the path of a .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TwinsError(f"cannot read checkpoint {path} ({error}): is it complete?") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TwinsError(f"{path} is not a twins training checkpoint: give a file it wrote")
    if state.get("version", 0) > VERSION:
        raise TwinsError(f"{path} was written by a newer twins: upgrade to read it")
    return state


def model_meta(model: torch.nn.Module, class_names: list[str] | None) -> dict[str, Any]:
    args = dict(getattr(model, "model_args", {}))
    return {
        "arch": getattr(model, "arch", None),
        "model_args": args,
        "num_classes": args.get("num_classes"),
        "act_layer": args.get("act_layer"),
        "class_names": list(class_names) if class_names is not None else None,
    }


def check_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to write weights that have become NaN or infinite: they would replace good ones."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TwinsError(
                f"{what} holds non-finite values ({name}): the run diverged; "
                "lower base_lr or raise warmup_length and resume from the last checkpoint"
            )


class CheckpointFiles:
    """The checkpoint files of one output folder: last.pt (every epoch, for resuming), best.pt
    (highest val top-1), epoch_NNNN.pt every `save_every` epochs, the newest
    `keep_checkpoint_max` kept."""

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

    def save(self, state: dict[str, Any], is_best: bool) -> None:
        """At the end of an epoch: best.pt when `is_best`, the epoch file every `save_every`
        epochs, then last.pt. last.pt goes last: a run killed before it is written redoes the
        epoch from the previous last.pt and writes the others again."""
        self._check(state)
        if is_best:
            save_atomic({k: state[k] for k in _BEST_KEYS if k in state}, self.best)
        epoch = state["epoch"]
        if self.save_every and epoch % self.save_every == 0:
            save_atomic(state, self.epoch_path(epoch))
            self._prune()
        self.save_last(state)

    def save_last(self, state: dict[str, Any]) -> None:
        """last.pt only (also within an epoch); never with non-finite weights."""
        self._check(state)
        save_atomic(state, self.last)

    @staticmethod
    def _check(state: dict[str, Any]) -> None:
        for key, what in (("model", "the model"), ("model_ema", "the EMA model")):
            if key in state:
                check_finite(state[key], f"{what} at step {state.get('global_step')}")

    def remove_temporaries(self) -> None:
        """Temporary files of writes that a killed process did not finish."""
        if self.folder.is_dir():
            for path in self.folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)

    def _prune(self) -> None:
        kept = sorted(self.folder.glob("epoch_*.pt"))
        for path in kept[: max(0, len(kept) - self.keep_max)]:
            path.unlink(missing_ok=True)
