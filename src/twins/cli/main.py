"""Entry point of the `twins` command: builds the parser from the command modules and runs one.

Each command module defines `register(subparsers)`, which adds its parser and sets
`func=run` as a default; `run(args) -> int` does the work by calling into the package.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from twins.errors import TwinsError

# Order of `twins --help`.
COMMANDS = ["demo", "models", "train", "eval", "predict", "export", "convert", "benchmark"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twins",
        description="Twins-PCPVT and Twins-SVT: train, evaluate, predict, export, convert, benchmark.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"twins.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TwinsError as error:
        print(f"twins: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twins: interrupted", file=sys.stderr)
        return 130
