"""The one exception type for user mistakes.

A `TwinsError` carries a single line that names the problem and the fix, in the terms of the
Python API (argument and config key names). `argument` names the argument the fix is about
(`"arch"`, `"ema"`, `"image_size"`, ...): the command line adds the flag that sets it. The
command line prints the line without a traceback and exits non-zero; the underlying error, when
there is one, stays attached as `__cause__` (`raise TwinsError(...) from error`), so that
`twins --traceback` (or `TWINS_DEBUG=1`) can show it.
"""

from __future__ import annotations


class TwinsError(ValueError):
    """A user mistake (bad key, missing folder, wrong checkpoint): one line, problem and fix."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
