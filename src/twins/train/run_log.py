"""`run.log`: every line a run prints (rank 0's), as printed, in its output folder.

A handler on the `twins` logger (`twins.console`) takes the run's lines, the notes and the
warnings from the start of `fit`; they wait in memory until the output folder is locked and
filled (`RunLogFile.open`), then go to the file line by line. Progress bars are not logging
records, so they stay out. The file grows across resumes: each start of a run that already has
one writes first a line saying where it goes on from. DataLoader workers (forked) write their
warnings through the same open file. A run that fails ends its log with the error's line (a
bug's traceback), as the command line prints it.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from twins.console import ROOT, LineFormatter, lines_recorded
from twins.errors import TwinsError

RUN_LOG = "run.log"


class RunLogFile(logging.Handler):
    shows_lines = False  # a record, not the terminal: `default_console` still prints

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(LineFormatter())
        self.waiting: list[str] = []
        self.file: TextIO | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, text: str) -> None:
        """`text` as lines of the log (kept until the file opens)."""
        if self.file is None:
            self.waiting.append(text + "\n")
            return
        self.file.write(text + "\n")
        self.file.flush()

    def open(self, folder: str | Path, resumed: str | None, time: str) -> None:
        """Go on writing into `folder`/run.log: first, where the file already holds lines, a line
        saying how this start goes on (`resumed`: where from; None: from the beginning)."""
        path = Path(folder) / RUN_LOG
        earlier = path.is_file() and path.stat().st_size > 0
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open while the run goes on)
        if earlier:
            self.file.write(f"=== {time}: {resumed or 'started again from the beginning'} ===\n")
        self.file.write("".join(self.waiting))
        self.file.flush()
        self.waiting = []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        super().close()


@contextlib.contextmanager
def recording(enabled: bool) -> Iterator[RunLogFile | None]:
    """The run's log for the block where `enabled` (the main process); None elsewhere."""
    if not enabled:
        yield None
        return
    handler = RunLogFile()
    ROOT.addHandler(handler)
    try:
        with lines_recorded():
            yield handler
    except TwinsError as error:
        handler.write(f"twins: error: {error}")  # the line the command line ends with
        raise
    except Exception as error:  # a bug: its traceback, as Python prints it
        handler.write("".join(traceback.format_exception(error)).rstrip("\n"))
        raise
    finally:
        ROOT.removeHandler(handler)
        handler.close()


def resume_line(saved: dict) -> str:
    """Where a resumed run goes on from, for its log."""
    if saved.get("epoch_progress") is not None:
        return f"resumed within epoch {saved['epoch'] + 1}, at step {saved['global_step']}"
    return f"resumed after epoch {saved['epoch']}, at step {saved['global_step']}"
