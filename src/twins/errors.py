"""The one exception type for user mistakes.

A `TwinsError` carries a single line that names the problem and the fix; the command line
prints it without a traceback and exits non-zero.
"""


class TwinsError(ValueError):
    """A user mistake (bad key, missing folder, wrong checkpoint): one line, problem and fix."""
