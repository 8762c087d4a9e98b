"""A data loader worker that dies (killed by a signal, such as the kernel's out-of-memory killer,
or exiting without a word) makes torch raise a `RuntimeError` under pages of traceback that
never say which data was being read; `reporting_worker_deaths(data)` turns it into one line
that does, and says what to try."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from twins.errors import TwinsError

# torch's words: "DataLoader worker (pid 123) is killed by signal: Killed." (its C++ signal
# handler) and "DataLoader worker (pid(s) 123, 124) exited unexpectedly" (the loader's check).
WORKER_DEATH = re.compile(r"DataLoader worker \(pid(?:\(s\))? (?P<pids>[\d, ]+)\) (?P<how>[^\n]*)")


def worker_death(error: BaseException, data: str) -> str | None:
    """ "the data loader worker (pid 123) reading DATA is killed by signal: Killed", None when
    `error` is no worker's death."""
    match = WORKER_DEATH.search(str(error)) if isinstance(error, RuntimeError) else None
    if match is None:
        return None
    how = match["how"].strip().rstrip(".")
    return f"the data loader worker (pid {match['pids'].strip()}) reading {data} {how}"


@contextlib.contextmanager
def reporting_worker_deaths(data: str, fewer: str = "fewer workers") -> Iterator[None]:
    """Within: a loader worker's death is a one-line `TwinsError` naming `data`; `fewer` says
    how the caller lowers the number of workers (e.g. "--workers 0")."""
    try:
        yield
    except RuntimeError as error:
        what = worker_death(error, data)
        if what is None:
            raise
        raise TwinsError(
            f"{what}: it was killed, most often by the system as memory ran out; use {fewer} "
            "or a smaller batch (with no workers, an error of the data itself is reported where "
            "it occurs)"
        ) from error
