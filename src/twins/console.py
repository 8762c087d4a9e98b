"""What the toolkit says while it works, through Python `logging`, so that a program using the
package routes it like any library's output and the command line sets how much it shows.

The loggers are all under `twins`: `twins.run` says the lines of a run and of a demo (`say`:
the opening lines, one per epoch, `done: ...`), `twins.notes` the notes (`twins.notes`), the
data readers, storage and the rest warn through their module's logger.

The command line prints them through one handler (`console(verbosity)`): the lines a command
says on stdout, as `print` would; warnings on stderr, a note as "twins: note: ...", DEBUG
lines on stderr (so that `--json` output stays one object). `--quiet` shows warnings and the
final line only, `-v` adds the DEBUG lines. A program that puts no handler on the `twins` (or
`twins.run`) logger sees a run's lines on stdout while the run goes on (`default_console`); a
handler of its own there takes them instead (the run's lines are INFO records while it goes
on, whatever the loggers' levels: a handler's own level filters them).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

ROOT = logging.getLogger("twins")
RUN = logging.getLogger("twins.run")

QUIET, NORMAL, VERBOSE = -1, 0, 1

# Said lines that start so are warnings to the user (shown under --quiet), printed where the
# run's other lines are.
WARNING_PREFIXES = ("warning:", "notice:")


def say(text: str, *, final: bool = False) -> None:
    """One line of a run or a job, shown at the default verbosity; `final`: the line that ends
    the job, shown under --quiet too."""
    level = logging.WARNING if text.startswith(WARNING_PREFIXES) else logging.INFO
    RUN.log(level, text, extra={"said": True, "final": final})


def debug(text: str) -> None:
    """A line shown under -v only: what the run did that the default lines leave out."""
    RUN.debug(text, extra={"said": True})


class LineFormatter(logging.Formatter):
    """A record as the user sees its line: the message; a note as "twins: note: ..."."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"twins: note: {text}" if record.name == "twins.notes" else text


class Console(logging.Handler):
    """The terminal: said lines on stdout, other warnings and DEBUG lines on stderr (the
    streams looked up at each line, so redirections made later hold)."""

    shows_lines = True  # `default_console` steps aside for any handler but a file's record

    def __init__(self, verbosity: int = NORMAL, *, last_resort: bool = False) -> None:
        super().__init__(logging.DEBUG if verbosity >= VERBOSE else logging.INFO)
        self.quiet = verbosity <= QUIET
        # Standing in for logging's last resort: other loggers' records only where the program
        # has no handler that would show them.
        self.last_resort = last_resort
        self.setFormatter(LineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        warning = record.levelno >= logging.WARNING
        if self.quiet and not warning and not getattr(record, "final", False):
            return
        said = getattr(record, "said", False) and record.levelno >= logging.INFO
        if self.last_resort and not said and logging.getLogger().handlers:
            return
        stream = sys.stdout if said else sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console(verbosity: int = NORMAL) -> Iterator[None]:
    """The command line's terminal for the block: every `twins` logger's lines per
    `verbosity` (QUIET, NORMAL, VERBOSE)."""
    handler = Console(verbosity)
    level = ROOT.level
    ROOT.addHandler(handler)
    ROOT.setLevel(logging.DEBUG if verbosity >= VERBOSE else logging.INFO)
    try:
        yield
    finally:
        ROOT.removeHandler(handler)
        ROOT.setLevel(level)


@contextlib.contextmanager
def default_console() -> Iterator[None]:
    """For the block (a run, a demo): the run's lines made at INFO (`lines_recorded`), and
    printed on stdout where the program routes none of them (no handler on `twins` or
    `twins.run`), as the command line shows them. Warnings of the other loggers go as they
    went (logging's last resort, or the program's handlers)."""
    routed = any(getattr(h, "shows_lines", True) for h in (*ROOT.handlers, *RUN.handlers))
    # On `twins`: the run's record (`twins.train.run_log`) is a handler there too, which keeps
    # logging's last resort from showing the other loggers' warnings; this one shows them.
    handler = None if routed else Console(NORMAL, last_resort=True)
    if handler is not None:
        ROOT.addHandler(handler)
    try:
        with lines_recorded():
            yield
    finally:
        if handler is not None:
            ROOT.removeHandler(handler)


@contextlib.contextmanager
def lines_recorded() -> Iterator[None]:
    """The run's INFO lines made for the block whatever the levels a program left (logging's
    default, WARNING, would drop them before any handler, the run's record included)."""
    level = RUN.level
    if RUN.getEffectiveLevel() > logging.INFO:
        RUN.setLevel(logging.INFO)
    try:
        yield
    finally:
        RUN.setLevel(level)


def progress_shown() -> bool:
    """Whether progress bars are drawn: on a terminal, unless the command line is quiet."""
    quiet = any(getattr(h, "quiet", False) for h in ROOT.handlers)
    return sys.stderr.isatty() and not quiet
