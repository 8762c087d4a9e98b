"""`python faulty_twins.py ARGS...` runs `twins ARGS...` with one fault injected, for the tests that
check what a real SIGKILL leaves behind. Environment variables choose the fault:

    TWINS_KILL_AT_STEP=N   SIGKILL this process as it is about to take its N-th optimizer step
    TWINS_KILL_IN_SAVE=N   SIGKILL it half way through writing its N-th checkpoint file
    TWINS_SIGNAL_AT_STEP=N send TWINS_SIGNAL (TERM or INT) to this process's group (its loader
                           workers too) as it is about to take its N-th optimizer step, as a
                           scheduler or Ctrl-C in a terminal would; with
                           TWINS_SIGNAL_TO=process, to this process alone
    TWINS_KILL_RANK=R      only in the process of rank R (default 0)

Faults fire only in the first attempt of an elastic run (TORCHELASTIC_RESTART_COUNT 0), so a
group restarted by `torchrun --max-restarts` then finishes.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch

import twins.train.trainer
from twins.cli.main import main


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(step: int) -> None:
    real_step = twins.train.trainer.optimizer_step
    calls = 0

    def optimizer_step(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == step:
            die()
        return real_step(*args, **kwargs)

    twins.train.trainer.optimizer_step = optimizer_step


def signal_at_step(step: int, number: int) -> None:
    real_step = twins.train.trainer.optimizer_step
    calls = 0

    def optimizer_step(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == step and os.environ.get("TWINS_SIGNAL_TO") == "process":
            os.kill(os.getpid(), number)
        elif calls == step:
            os.killpg(os.getpgrp(), number)
        return real_step(*args, **kwargs)

    twins.train.trainer.optimizer_step = optimizer_step


def kill_in_save(save: int) -> None:
    real_save = torch.save
    calls = 0

    def half_save(obj, file, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls != save:
            return real_save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        if hasattr(file, "write"):  # the open temporary file of twins.atomic
            file.write(data[: len(data) // 2])
            file.flush()
        else:
            with open(file, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
        die()

    torch.save = half_save


if __name__ == "__main__":
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    chosen_rank = os.environ.get("RANK", "0") == os.environ.get("TWINS_KILL_RANK", "0")
    if first_attempt and chosen_rank:
        if "TWINS_KILL_AT_STEP" in os.environ:
            kill_at_step(int(os.environ["TWINS_KILL_AT_STEP"]))
        if "TWINS_SIGNAL_AT_STEP" in os.environ:
            number = getattr(signal, "SIG" + os.environ.get("TWINS_SIGNAL", "TERM"))
            signal_at_step(int(os.environ["TWINS_SIGNAL_AT_STEP"]), number)
        if "TWINS_KILL_IN_SAVE" in os.environ:
            kill_in_save(int(os.environ["TWINS_KILL_IN_SAVE"]))
    raise SystemExit(main(sys.argv[1:]))
