"""What every tracker is (`Tracker`), what it opens its run with (`TrackerStart`) and the
names under which all show a record's numbers (`scalars`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    name: str  # as in `loggers`
    run_id: str | None  # the tracker's run, kept in the checkpoint (None: the folder is the run)

    def log(self, record: dict[str, Any]) -> bool:
        """Send a metrics.jsonl record, leaving out what the run already holds; whether any
        of it was sent."""

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        """At the start of a resumed run: the records of metrics.jsonl up to its checkpoint
        that the tracker lacks (it was down, or lost what it buffered when the run was
        killed)."""

    def flush(self) -> None:
        """At an epoch's end: what is buffered, out."""

    def finish(self, folder: Path, final: dict[str, Any]) -> None:
        """At the run's end: the files of `folder` (config.yaml, curves.png, run.json) and
        `final` (the last evaluation) as the run's artifacts; the run marked finished."""

    def close(self) -> None:
        """Let go of the run (the run may go on later: a resume)."""


@dataclass
class TrackerStart:
    """What a tracker opens its run with."""

    folder: Path  # the run's local output folder
    output: str  # the output as the user named it (a folder or a URL): the run's identity
    run_id: str | None = None  # the checkpoint's run of this tracker, or the id to create
    resumed: bool = False  # the run goes on from a checkpoint
    resume_step: int = 0  # the checkpoint's step
    params: dict[str, Any] = field(default_factory=dict)  # the resolved config


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's numbers under the names every tracker shows: `val/<metric>` for validation
    results, `train/<key>` on step records, `eval/<key>` on an iteration run's evaluations
    and `epoch/<key>` on epoch records."""
    prefix = {"step": "train", "eval": "eval"}.get(record.get("kind"), "epoch")
    values = {}
    for key, value in record.items():
        if key in ("kind", "epoch", "step") or not isinstance(value, (int, float)):
            continue  # None: a NaN in metrics.jsonl
        tag = key.replace("_", "/", 1) if key.startswith("val_") else f"{prefix}/{key}"
        values[tag] = float(value)
    return values


def short(error: BaseException) -> str:
    """An error as a few words for a one-line warning: its type and first line, cut short."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
