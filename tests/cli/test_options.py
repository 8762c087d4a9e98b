"""Shared options read the same in every command; values argparse refuses before any work."""

from __future__ import annotations

import argparse

import pytest

from twins.cli.main import build_parser, main
from twins.cli.options import fraction, non_negative_int, output_folder, positive_int, weights_file


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = (
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return dict(subparsers.choices)


def helps(option: str) -> dict[str, str]:
    """The help of `option` in each command that has it."""
    found = {}
    for name, parser in command_parsers().items():
        for action in parser._actions:
            if option in action.option_strings:
                found[name] = action.help
    return found


@pytest.mark.parametrize(
    "option, commands",
    [
        ("--checkpoint", {"eval", "predict", "export"}),
        ("--arch", {"eval", "predict", "export", "convert"}),
        ("--device", {"predict", "benchmark"}),
        ("--json", {"models", "eval", "predict", "benchmark"}),
        (
            "--traceback",
            {
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
            },
        ),
    ],
)
def test_a_shared_option_is_declared_once(option, commands):
    found = helps(option)
    assert set(found) == commands
    # One text everywhere; a command may add how it differs after a semicolon.
    assert len({text.split(";")[0] for text in found.values()}) == 1, found


def test_ema_means_the_checkpoint_ema_weights_everywhere():
    found = helps("--ema")
    assert set(found) == {"eval", "predict", "export", "convert"}
    assert {text.split(":")[0] for text in found.values()} == {
        "the EMA weights of a training checkpoint (a run with with_ema=true)"
    }
    assert "instead of the raw weights" in found["predict"]
    assert "beside the raw weights (sets with_ema=true)" in found["eval"]


@pytest.mark.parametrize("text, value", [("1", 1), ("32", 32)])
def test_positive_int_takes_counts(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "at least 1, not 0"),
        ("-3", "not -3"),
        ("2.5", "not an integer"),
        ("x", "not an integer"),
    ],
)
def test_positive_int_refuses_zero_and_non_integers(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)


def test_non_negative_int_takes_zero_only_as_its_lowest():
    assert non_negative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="at least 0, not -1"):
        non_negative_int("-1")


@pytest.mark.parametrize("text", ["1", "0.875", "1e-3"])
def test_fraction_takes_zero_to_one(text):
    assert fraction(text) == float(text)


@pytest.mark.parametrize("text", ["0", "-0.5", "1.01", "5", "nan", "inf", "most"])
def test_fraction_refuses_what_lies_outside(text):
    with pytest.raises(argparse.ArgumentTypeError):
        fraction(text)


def test_a_folder_is_no_weights_file(tmp_path):
    (tmp_path / "best.pt").touch()
    assert weights_file(str(tmp_path / "best.pt")) == str(tmp_path / "best.pt")
    assert weights_file(str(tmp_path / "missing.pt")) == str(tmp_path / "missing.pt")
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder, not a weights file"):
        weights_file(str(tmp_path))


def test_a_hub_layout_folder_ids_and_urls_are_weights(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").touch()
    for given in (str(tmp_path / "hf"), "hf-hub:org/name@v1", "s3://bucket/best.pt"):
        assert weights_file(given) == given


def test_an_output_folder_may_be_new_or_a_folder_but_not_a_file(tmp_path):
    (tmp_path / "notes.txt").touch()
    assert output_folder(str(tmp_path)) == str(tmp_path)
    assert output_folder(str(tmp_path / "new")) == str(tmp_path / "new")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file, not a folder"):
        output_folder(str(tmp_path / "notes.txt"))


PREDICT = "predict --checkpoint w.pt a.png"
EXPORT = "export --checkpoint w.pt --format onnx -o m.onnx"


# Command lines ending in an option with a wrong value.
@pytest.mark.parametrize(
    "line",
    [
        f"{PREDICT} --topk 0",
        f"{PREDICT} --batch-size 0",
        f"{PREDICT} --image-size 0",
        f"{PREDICT} --crop-pct 5",
        f"{PREDICT} --crop-pct 0",
        f"{EXPORT} --image-size 0",
        "benchmark --batch-size 0",
        "benchmark --workers -1",
        "benchmark --iters 0",
        "benchmark --device cuda:1",
    ],
)
def test_a_wrong_value_is_refused_naming_its_option(line, capsys):
    argv = line.split()
    assert main(argv) == 2
    assert f"error: argument {argv[-2]}: " in capsys.readouterr().err


def test_sizes_not_given_stay_unset_and_given_ones_are_kept():
    parser = build_parser()
    base = PREDICT.split()
    args = parser.parse_args(base)
    assert args.image_size is None and args.crop_pct is None
    args = parser.parse_args([*base, "--image-size", "1", "--crop-pct", "1"])
    assert args.image_size == 1 and args.crop_pct == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "a.png", "--checkpoint", "FOLDER"],
        ["eval", "-c", "r.yaml", "--checkpoint", "FOLDER"],
        ["export", "--format", "onnx", "-o", "m.onnx", "--checkpoint", "FOLDER"],
        ["convert", "FOLDER", "x.pth"],
    ],
)
def test_a_folder_given_as_weights_is_refused_in_one_line(argv, tmp_path, capsys):
    assert main([str(tmp_path) if word == "FOLDER" else word for word in argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "is a folder, not a weights file" in lines[0]


@pytest.mark.parametrize("command", [["train", "-c", "r.yaml"], ["demo"]])
def test_an_output_folder_naming_a_file_is_refused(command, tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert main([*command, "--output", str(tmp_path / "run")]) == 2
    assert "argument --output: " in capsys.readouterr().err
    assert (tmp_path / "run").read_text() == "not a folder"
