"""Where a run's metrics go besides `metrics.jsonl`: the trackers named by the config's
`loggers` (TensorBoard event files, an MLflow tracking server, Weights & Biases), one module
each beside this one, imported only when named (mlflow and wandb are the `track` extra).

Every tracker gets the records `metrics.jsonl` gets, under the same names (`scalars`), at the
run's optimizer step. A tracker keeps a run of its own (`run_id`, kept in the checkpoint's
"trackers"), so a resumed run goes on in the same tracker run; there each tracker leaves out
what it already holds, steps sent after the checkpoint and before a kill included, so its
history reads as the unbroken run's, each step once; what it lacks of the steps before the
checkpoint (it was down, or lost what it buffered in a kill) it gets from metrics.jsonl when
the run goes on (`catch_up`). A tracker that cannot be reached or stops
answering warns once (`guard`) and the run goes on; `twins sync RUN --to mlflow|wandb` sends
later what it lacks.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twins.errors import TwinsError

# The Python package each tracker needs beyond the base install.
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


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


def check_loggers(loggers: list[str]) -> None:
    """Refuse, before anything starts, a tracker whose package is not installed."""
    for name in loggers:
        package = PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise TwinsError(
                f"loggers names {name}, whose package {package} is not installed: "
                f"pip install 'twins[track]', or leave {name} out of loggers",
                argument="loggers",
            )


def tracker_module(name: str) -> Any:
    """The module of the tracker `name` (`loggers`' names)."""
    return importlib.import_module(f"twins.train.trackers.{name}")


def open_trackers(
    config: Any, start: TrackerStart, ids: dict[str, str], say: Callable[[str], None]
) -> tuple[list[Tracker], dict[str, str]]:
    """The trackers of `config.loggers`, each going on with its run in `ids` (the
    checkpoint's), and the run ids to keep in the checkpoint. A tracker that cannot start warns
    (one line) and is left out; its id is kept where it chose one, for a later sync."""
    from twins.train.trackers.guard import Guarded

    trackers: list[Tracker] = []
    kept = dict(ids)
    for name in config.loggers:
        module = tracker_module(name)
        run_id = ids.get(name) or module.fresh_id()
        if run_id:
            kept[name] = run_id
        try:
            tracker = module.open_run(config, _with(start, run_id))
        except Exception as error:  # a tracker down must not stop the run
            say(module.unreachable(config, start, error))
            continue
        if tracker.run_id:
            kept[name] = tracker.run_id
        trackers.append(Guarded(tracker, start.output, say))
    return trackers, kept


def _with(start: TrackerStart, run_id: str | None) -> TrackerStart:
    return TrackerStart(
        start.folder, start.output, run_id, start.resumed, start.resume_step, start.params
    )


def short(error: BaseException) -> str:
    """An error as a few words for a one-line warning: its type and first line, cut short."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
