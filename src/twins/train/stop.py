"""Stopping when asked: SIGTERM (pre-emption by SLURM, Kubernetes, spot instances) or SIGINT
(Ctrl-C) ends the run after the current optimizer step, with `last.pt` written there, so that
the same command resumes it exactly, nothing before the signal's step computed again.

The handlers only note the signal; the fit loop asks `requested()` after every optimizer step
and at the end of each epoch. Under torchrun the processes agree (a collective over the
control group) so that all stop after the same step. A second signal of the same kind ends the
process at once, as it would without these handlers. Loader workers ignore both signals: they
end with the run (`twins.data.loader`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from twins import storage
from twins.train import distributed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: while inside, SIGTERM and SIGINT ask the run to stop."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _note(self, number: int, frame: FrameType | None) -> None:
        if self.received == number:  # asked twice: stop now, the usual way
            signal.signal(number, self._previous.get(number, signal.SIG_DFL))
            signal.raise_signal(number)
            return
        self.received = number
        # A storage call retrying through an outage would keep the run from stopping for the
        # whole retry budget (300 s): it ends now, with its line.
        storage.interrupt_waits()

    def requested(self) -> int | None:
        """The signal that asks this run to stop (on any process), or None. A collective under
        torchrun: every process calls it at the same points."""
        number = self.received or 0
        return distributed.max_over_processes(number) or None


def raise_stop(number: int) -> None:
    """End the process the way the signal would have, now that the run is saved."""
    if number == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + number)


def signal_name(number: int) -> str:
    return signal.Signals(number).name
