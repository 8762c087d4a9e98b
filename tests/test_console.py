"""What the package says, through logging: the command line's terminal at each verbosity, and a
Python program's default (stdout while a run goes on) that steps aside for its own handler."""

from __future__ import annotations

import logging

import pytest

from twins.console import (
    NORMAL,
    QUIET,
    VERBOSE,
    console,
    debug,
    default_console,
    progress_shown,
    say,
)
from twins.notes import note


def speak() -> None:
    say("model: pcpvt_small")
    debug("wrote last.pt")
    note("no preprocessing recorded: using ImageNet's")
    logging.getLogger("twins.data.folder").warning("skipping unreadable image a.png")
    say("warning: no image of class 3 could be read")
    say("done: best val top-1 90.00%", final=True)


WARNINGS = (
    "twins: note: no preprocessing recorded: using ImageNet's\nskipping unreadable image a.png\n"
)


@pytest.mark.parametrize(
    ("verbosity", "out", "err"),
    [
        (
            NORMAL,
            "model: pcpvt_small\nwarning: no image of class 3 could be read\n"
            "done: best val top-1 90.00%\n",
            WARNINGS,
        ),
        (
            QUIET,
            "warning: no image of class 3 could be read\ndone: best val top-1 90.00%\n",
            WARNINGS,
        ),
        (
            VERBOSE,
            "model: pcpvt_small\nwarning: no image of class 3 could be read\n"
            "done: best val top-1 90.00%\n",
            f"wrote last.pt\n{WARNINGS}",
        ),
    ],
)
def test_the_terminal_shows_per_verbosity(verbosity, out, err, capsys):
    with console(verbosity):
        speak()
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == (out, err)


def test_a_program_without_logging_sees_the_run_lines_on_stdout(capsys):
    with default_console():
        say("epoch 1/2")
        debug("wrote last.pt")
    assert capsys.readouterr().out == "epoch 1/2\n"
    say("after the run")  # outside a run, the program's logging decides
    assert capsys.readouterr().out == ""


def test_a_program_handler_takes_the_lines_instead(capsys):
    taken: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: taken.append(record.getMessage())
    logging.getLogger("twins").addHandler(handler)
    try:
        with default_console():
            say("epoch 1/2")
    finally:
        logging.getLogger("twins").removeHandler(handler)
    assert taken == ["epoch 1/2"] and capsys.readouterr().out == ""


def test_no_progress_bars_when_quiet(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert progress_shown()
    with console(QUIET):
        assert not progress_shown()


def test_warnings_reach_a_program_without_logging_beside_the_run_log(monkeypatch, capsys):
    """The run's log is a handler on `twins`, which keeps logging's last resort from printing
    the data's warnings; the default terminal prints them in its place, once."""
    record_only = logging.Handler()
    record_only.shows_lines = False
    record_only.emit = lambda record: None
    logging.getLogger("twins").addHandler(record_only)
    folder = logging.getLogger("twins.data.folder")
    try:
        with default_console():
            monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a program that set none
            folder.warning("skipping unreadable image a.png")
            monkeypatch.undo()  # pytest's own handler back: a program that set one
            folder.warning("skipping unreadable image b.png")
    finally:
        logging.getLogger("twins").removeHandler(record_only)
    assert capsys.readouterr().err == "skipping unreadable image a.png\n"
