"""One-line notes to the user: what a call chose where its input did not say (the defaults used
for what a weights file does not record, a pretrained head replaced), so that nothing is
guessed silently.

They are warnings of the `twins.notes` logger: a Python program that configures no logging
sees them on stderr (logging's last resort), and can capture or silence them as usual; the
command line prints them as `twins: note: ...` (`twins.console`).
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("twins.notes")


def note(message: str) -> None:
    """Tell the user, in one line, what was chosen for them and how to choose otherwise."""
    LOGGER.warning(message)
