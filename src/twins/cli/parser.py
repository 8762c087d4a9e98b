"""The parser of one command: its positionals may stand anywhere among its options.

Plain argparse stops filling a `nargs="*"` positional at the first option, so
`twins train -c r.yaml epochs=2 --data d seed=1` would refuse `seed=1`, and
`twins predict --checkpoint w.pt a.png --topk 3 b.png` would refuse `b.png`. argparse's
intermixed parsing (options first, then the positionals from what is left) accepts both.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose `parse_known_args` (what the `twins` parser calls on the
    command's arguments) parses intermixed options and positionals."""

    _intermixing = False

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:
            # Up to Python 3.12 the intermixed parse runs its two passes through this method.
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def flags_by_argument(parser: argparse.ArgumentParser) -> dict[str, str]:
    """What sets each destination on the command line: `{"arch": "--arch", "source": "SRC"}`.

    Options are named by their longest spelling, positionals by their metavar; `twins`'s own
    options (help, traceback, verbosity) and the key=value overrides are left out."""
    flags: dict[str, str] = {}
    for action in parser._actions:  # argparse offers no public list of a parser's arguments
        if action.dest in (argparse.SUPPRESS, "help", "traceback", "verbosity", "overrides"):
            continue
        if action.option_strings:
            flags[action.dest] = max(action.option_strings, key=len)
        else:
            flags[action.dest] = _positional_name(action)
    return flags


def _positional_name(action: argparse.Action) -> str:
    metavar: Any = action.metavar
    if isinstance(metavar, str):
        return metavar
    return action.dest.upper()
