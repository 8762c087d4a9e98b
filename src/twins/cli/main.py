"""Entry point of the `twins` command: builds the parser from the command modules and runs one.

Each command module defines `register(subparsers)`, which adds its parser and sets `func=run`
as a default; `run(args) -> int` does the work by calling into the package. The command modules
import argparse and `twins.cli.options` only, and each `run` imports what its command needs, so
`twins --help` and every `twins COMMAND --help` start without torch, and `twins train` never
loads the export stack.

A user mistake (`twins.errors.TwinsError`) ends the command with one line on stderr and exit
status 2; when the error names the argument its fix is about, the line ends with the flag that
sets it. `--traceback` (anywhere on the line) or `TWINS_DEBUG=1` prints the full traceback with
the chain of causes instead. Any other exception is a bug and keeps Python's traceback.

What the package says goes through `logging` (`twins.console`): notes (`twins.notes`: defaults
used where a file does not say) are printed as `twins: note: ...` lines on stderr; `-q` /
`--quiet` (anywhere on the line) leaves warnings and the final line, `-v` / `--verbose` adds
debug lines.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from twins.cli.parser import CommandParser, flags_by_argument
from twins.console import NORMAL, QUIET, VERBOSE, console
from twins.errors import TwinsError

# Order of `twins --help`.
COMMANDS = [
    "demo",
    "models",
    "train",
    "eval",
    "predict",
    "export",
    "convert",
    "pack",
    "benchmark",
    "sync",
]

# Python arguments (and config keys) set by an option of another name: `--data` sets data_url.
OPTION_FOR_ARGUMENT = {
    "data_url": "data",
    "train_url": "output",
    "with_ema": "ema",
    "inputs": "images",
}
# Python arguments that train / eval / demo set through a config key of another name.
CONFIG_KEY_FOR_ARGUMENT = {"device": "device_target"}

TRACEBACK_HELP = "on an error, print the full traceback with its causes (or set TWINS_DEBUG=1)"


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"twins {package_version()}")
        parser.exit()


def package_version() -> str:
    """The installed distribution's version, else the source tree's `twins.__version__`."""
    from importlib import metadata

    try:
        return metadata.version("twins")
    except metadata.PackageNotFoundError:
        import twins

        return twins.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twins",
        description="Twins-PCPVT and Twins-SVT: train, evaluate, predict, export, convert, benchmark.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument("--traceback", action="store_true", help=TRACEBACK_HELP)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=CommandParser
    )
    for name in COMMANDS:
        importlib.import_module(f"twins.cli.{name}").register(subparsers)
    add_verbosity(parser, default=NORMAL)
    for command in subparsers.choices.values():
        # Also after the command; SUPPRESS keeps `twins --traceback COMMAND` from being reset.
        command.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=TRACEBACK_HELP
        )
        add_verbosity(command, default=argparse.SUPPRESS)
        command.set_defaults(flags=flags_by_argument(command))
    return parser


def add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    """-q / --quiet and -v / --verbose: how much the command prints (`twins.console`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=QUIET,
        default=default,
        help="print warnings and the final line only",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=VERBOSE,
        default=default,
        help="print debug lines too (on stderr)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (also for --help, --version and usage errors)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse ends --help, --version and usage errors this way
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    try:
        with console(args.verbosity):
            return int(args.func(args) or 0)
    except TwinsError as error:
        if args.traceback or debugging():
            traceback.print_exception(error)
        else:
            print(f"twins: error: {with_flag(error, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twins: interrupted", file=sys.stderr)
        return 130


def debugging() -> bool:
    """TWINS_DEBUG set to anything but empty, 0, false, no or off."""
    value = os.environ.get("TWINS_DEBUG", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def with_flag(error: TwinsError, args: argparse.Namespace) -> str:
    """The error's line, ending with what sets its argument on this command's line (unless the
    line already says it): "... (command line: --arch)"."""
    message = str(error)
    flag = command_line_form(error.argument, args)
    if flag is None or flag.removesuffix("...") in message:
        return message
    return f"{message} (command line: {flag})"


def command_line_form(argument: str | None, args: argparse.Namespace) -> str | None:
    """The option (`--arch`), positional (`SRC`) or override (`epochs=...`) that sets
    `argument` on the running command's line, or None when that line cannot set it."""
    if argument is None:
        return None
    flags: dict[str, str] = args.flags
    for dest in (argument, OPTION_FOR_ARGUMENT.get(argument)):
        if dest in flags:
            return flags[dest]
    key = CONFIG_KEY_FOR_ARGUMENT.get(argument, argument)
    if hasattr(args, "overrides") and _is_config_key(key):
        return f"{key}=..."
    return None


def _is_config_key(name: str) -> bool:
    from twins.config import KEYS

    return name.split(".")[0] in KEYS
