"""Command parsers: positionals anywhere among the options; what sets each argument."""

from __future__ import annotations

import pytest

from twins.cli.main import build_parser


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize(
    "order",
    [
        ["-c", "r.yaml", "--data", "d", "epochs=2", "seed=1"],
        ["-c", "r.yaml", "epochs=2", "seed=1", "--data", "d"],
        ["-c", "r.yaml", "epochs=2", "--data", "d", "seed=1"],
        ["epochs=2", "-c", "r.yaml", "seed=1", "--data", "d"],
    ],
)
def test_overrides_are_taken_anywhere_in_their_order(command, order):
    checkpoint = ["--checkpoint", "w.pt"] if command == "eval" else []
    args = parse([command, *order, *checkpoint])
    assert args.config == "r.yaml" and args.data == "d"
    assert args.overrides == ["epochs=2", "seed=1"]


def test_images_are_taken_between_options():
    args = parse(["predict", "--checkpoint", "w.pt", "a.png", "--topk", "3", "b.png", "--json"])
    assert args.images == ["a.png", "b.png"] and args.topk == 3 and args.json


def test_options_of_convert_may_stand_between_its_files():
    args = parse(["convert", "a.pth", "--arch", "svt_small", "b.safetensors", "--ema"])
    assert (args.source, args.destination, args.arch, args.ema) == (
        "a.pth",
        "b.safetensors",
        "svt_small",
        True,
    )


def test_an_unknown_option_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        parse(["train", "-c", "r.yaml", "--epochs", "2", "seed=1"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --epochs" in capsys.readouterr().err


def test_flags_name_options_by_their_long_spelling_and_positionals_by_metavar():
    convert = parse(["convert", "a", "b"]).flags
    assert convert == {"source": "SRC", "destination": "DST", "arch": "--arch", "ema": "--ema"} | {
        "model_args": "--model-args"
    }
    export = parse(["export", "--checkpoint", "w", "--format", "onnx", "-o", "m.onnx"]).flags
    assert export["output"] == "--output" and export["image_size"] == "--image-size"


def test_flags_leave_out_help_traceback_and_the_overrides():
    flags = set(parse(["train", "-c", "r.yaml"]).flags)
    assert flags == {"config", "data", "output", "print_config", "dry_run"}
