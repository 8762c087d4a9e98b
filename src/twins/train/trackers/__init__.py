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

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from twins.errors import TwinsError
from twins.train.trackers.guard import Guarded
from twins.train.trackers.interface import Tracker, TrackerStart, scalars, short

__all__ = ["Tracker", "TrackerStart", "check_loggers", "open_trackers", "scalars", "short"]

# The Python package each tracker needs beyond the base install.
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


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
    trackers: list[Tracker] = []
    kept = dict(ids)
    for name in config.loggers:
        module = tracker_module(name)
        run_id = ids.get(name) or module.fresh_id()
        if run_id:
            kept[name] = run_id
        its_start = dataclasses.replace(start, run_id=run_id)
        try:
            tracker = module.open_run(config, its_start)
        except Exception as error:  # a tracker down must not stop the run
            say(module.unreachable(config, its_start, error))
            continue
        if tracker.run_id:
            kept[name] = tracker.run_id
        trackers.append(Guarded(tracker, start.output, say))
    return trackers, kept
