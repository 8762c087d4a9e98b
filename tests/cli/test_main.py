"""The `twins` entry point: light start, --version, one-line errors that name the flag, the
full traceback on request, exit statuses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import twins
from twins.cli import convert, train
from twins.cli.main import COMMANDS, build_parser, main, package_version
from twins.config import save_config
from twins.console import NORMAL, QUIET, VERBOSE
from twins.errors import TwinsError

SOURCE = Path(twins.__file__).resolve().parent.parent


def twins_process(code: str, argv: tuple[str, ...] | list[str] = ()) -> subprocess.CompletedProcess:
    """`code` with `argv` in a fresh interpreter that imports this source tree."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        env={**os.environ, "PYTHONPATH": str(SOURCE), "TWINS_DEBUG": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_of_twins_and_of_each_command_imports_no_torch():
    # Every command's parser is built on every run, so this holds for each command's start.
    # (`train --help` lists the config keys: it reads the YAML config module, not torch.)
    helps = [["--help"], *[[name, "--help"] for name in COMMANDS]]
    code = f"""
import contextlib, io, json, sys
from twins.cli.main import main
loaded = {{}}
for argv in {helps!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    loaded[" ".join(argv)] = [m for m in ("torch", "timm") if m in sys.modules]
print(json.dumps(loaded))
"""
    process = twins_process(code)
    assert process.returncode == 0, process.stderr
    assert set(map(tuple, json.loads(process.stdout).values())) == {()}, process.stdout


def test_train_help_lists_the_config_keys(capsys):
    from twins.config import describe_keys

    assert main(["train", "--help"]) == 0
    assert capsys.readouterr().out.endswith(f"config keys (default):\n{describe_keys()}\n")


def test_version_is_the_package_version():
    process = twins_process(
        "from twins.cli.main import main; raise SystemExit(main())", ["--version"]
    )
    assert process.returncode == 0 and process.stdout == f"twins {package_version()}\n"
    assert package_version() in (twins.__version__, metadata.version("twins"))


def test_version_falls_back_to_the_source_tree(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert package_version() == twins.__version__


def fail_with(monkeypatch, module, exception: BaseException) -> None:
    """Make `module`'s command raise `exception` instead of doing its work."""

    def run(args):
        raise exception

    monkeypatch.setattr(module, "run", run)


def mistake(argument: str | None = None, message: str = "the weights do not fit") -> TwinsError:
    try:
        raise OSError("the underlying cause")
    except OSError as cause:
        try:
            raise TwinsError(message, argument=argument) from cause
        except TwinsError as error:
            return error


CONVERT = ["convert", "a.pth", "b.safetensors"]
TRAIN = ["train", "-c", "r.yaml"]

# (command, the error's argument, message, the line twins prints)
FLAGGED = {
    "an option": (CONVERT, "arch", "pass the model", "pass the model (command line: --arch)"),
    "a positional": (CONVERT, "source", "unreadable", "unreadable (command line: SRC)"),
    "a config key with an option": (TRAIN, "data_url", "no data", "no data (command line: --data)"),
    "a config key set as key=value": (
        TRAIN,
        "epochs",
        "too few",
        "too few (command line: epochs=...)",
    ),
    "a nested config key": (
        TRAIN,
        "model_args.depths",
        "bad",
        "bad (command line: model_args.depths=...)",
    ),
    "an argument the command cannot set": (CONVERT, "device", "no GPU", "no GPU"),
    "no argument": (CONVERT, None, "broken file", "broken file"),
    "a line that names the flag already": (
        TRAIN,
        "train_url",
        "use another --output",
        "use another --output",
    ),
}


@pytest.mark.parametrize("case", FLAGGED)
def test_a_mistake_is_one_line_that_ends_with_its_flag(case, monkeypatch, capsys):
    monkeypatch.delenv("TWINS_DEBUG", raising=False)
    argv, argument, message, expected = FLAGGED[case]
    fail_with(monkeypatch, convert if argv[0] == "convert" else train, mistake(argument, message))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"twins: error: {expected}\n"


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--traceback", *CONVERT], {}),
        ([*CONVERT, "--traceback"], {}),
        (CONVERT, {"TWINS_DEBUG": "1"}),
    ],
)
def test_traceback_or_twins_debug_shows_the_cause(argv, env, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fail_with(monkeypatch, convert, mistake("arch"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "OSError: the underlying cause" in err
    assert "direct cause" in err and err.rstrip().endswith("TwinsError: the weights do not fit")


def test_twins_debug_0_keeps_the_one_line(monkeypatch, capsys):
    monkeypatch.setenv("TWINS_DEBUG", "0")
    fail_with(monkeypatch, convert, mistake())
    assert main(CONVERT) == 2
    assert capsys.readouterr().err == "twins: error: the weights do not fit\n"


def test_an_interrupt_is_one_line_and_status_130(monkeypatch, capsys):
    fail_with(monkeypatch, convert, KeyboardInterrupt())
    assert main(["--traceback", *CONVERT]) == 130
    assert capsys.readouterr().err == "twins: interrupted\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    fail_with(monkeypatch, convert, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(CONVERT)


def test_help_and_usage_errors_return_their_status(capsys):
    assert main(["--help"]) == 0
    assert main([]) == 2
    assert main(["predict", "a.png"]) == 2  # --checkpoint missing
    assert "required: --checkpoint" in capsys.readouterr().err


# What a process exits with, and prints, when its command raises (run in a fresh interpreter).
RAISING = """
import sys
from twins.cli import convert
from twins.cli.main import main
from twins.errors import TwinsError
def run(args):
    try:
        raise OSError("disk full")
    except OSError as error:
        raise {raised} from error
convert.run = run
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "raised, argv, status, printed",
    [
        (
            "TwinsError('no room', argument='destination')",
            CONVERT,
            2,
            "twins: error: no room (command line: DST)\n",
        ),
        ("TwinsError('no room')", ["--traceback", *CONVERT], 2, "OSError: disk full"),
        ("KeyboardInterrupt()", CONVERT, 130, "twins: interrupted\n"),
        ("RuntimeError('a bug')", CONVERT, 1, "RuntimeError: a bug"),
    ],
)
def test_exit_status_and_output_of_a_process(raised, argv, status, printed):
    process = twins_process(RAISING.format(raised=raised), argv)
    assert process.returncode == status, process.stderr
    if printed.endswith("\n"):
        assert process.stderr == printed
    else:
        assert "Traceback" in process.stderr and printed in process.stderr


def test_every_command_takes_quiet_and_verbose():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse lists them nowhere else
    for name, command in commands.items():
        for flag in ("-q", "--quiet", "-v", "--verbose"):
            assert flag in command._option_string_actions, (name, flag)
    assert parser.parse_args(["-q", "models"]).verbosity == QUIET
    assert parser.parse_args(["models", "-v"]).verbosity == VERBOSE
    assert parser.parse_args(["models"]).verbosity == NORMAL


@pytest.fixture
def recipe(imagefolder, tiny_config, tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, tmp_path / "unused", epochs=1), path)
    return path


def test_train_prints_per_verbosity_and_run_log_keeps_the_default_lines(recipe, tmp_path, capsys):
    def train(name: str, *flags: str) -> tuple[str, str, str]:
        """What `twins train` printed on stdout and stderr, and its run.log, with the timings
        and the output folder's name (the only parts that differ between runs) left out."""
        output = tmp_path / name
        assert main(["train", "-c", str(recipe), "--output", str(output), *flags]) == 0
        printed = capsys.readouterr()
        log = (output / "run.log").read_text()
        same = [
            re.sub(r"  [\d.]+s  \d+ img/s", "", text).replace(str(output), "OUT")
            for text in (printed.out, printed.err, log)
        ]
        return same[0], same[1], same[2]

    out, err, log = train("default")
    assert err == "" and out.splitlines()[-1].startswith("done:")
    assert log == out  # every line, as printed

    quiet_out, quiet_err, quiet_log = train("quiet", "-q")
    assert quiet_out == out.splitlines(keepends=True)[-1] and quiet_err == ""
    assert quiet_log == out  # the record is whole whatever the terminal shows

    verbose_out, verbose_err, verbose_log = train("verbose", "-v")
    assert verbose_out == out
    assert "wrote OUT/run.json\n" in verbose_err
    assert "wrote OUT/checkpoints/last.pt (epoch 1, step 4)\n" in verbose_err
    assert sorted(verbose_log.splitlines()) == sorted((out + verbose_err).splitlines())
