"""A training run killed in the middle, in process, for the resume tests: its optimizer step
raises `Killed`, which nothing in the run catches, as SIGKILL would end it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import twins.train.trainer
from twins.config import TrainConfig
from twins.tasks import fit

# Record keys that measure the machine, not the run: left out when runs are compared.
TIMINGS = ("epoch_seconds", "images_per_s", "output")


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the run catches it."""


def fit_killed_at_step(config: TrainConfig, step: int) -> None:
    """Run `fit(config)` and kill it as its `step`-th optimizer step (counted from this launch,
    from 1) begins; fails when the run ends before."""
    killed_at_step(lambda: fit(config), step)


def killed_at_step(run: Callable[[], Any], step: int) -> None:
    """Call `run` (a training run in this process: `fit`, or `twins train` through the CLI)
    and kill it as its `step`-th optimizer step begins; fails when the run ends before."""
    real_step, calls = twins.train.trainer.optimizer_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise Killed
        return real_step(*args, **kwargs)

    twins.train.trainer.optimizer_step = dying_step
    try:
        with pytest.raises(Killed):
            run()
    finally:
        twins.train.trainer.optimizer_step = real_step
