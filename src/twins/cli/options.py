"""Options several commands share, declared once so that they read the same everywhere, and the
value checks argparse makes while parsing, before anything heavy is imported.

The EMA rule: `--ema` names the EMA weights a training checkpoint keeps (a run trained with
`with_ema=true`). `predict`, `export` and `convert` make one thing from one set of weights, so
there it takes the EMA weights instead of the raw ones; `eval` reports both, as training's own
evaluation does, so there it means `with_ema=true` (the config key `eval` reads otherwise).
Either way, a file without EMA weights given `--ema` is refused. A run's best.pt already holds
the weights that scored best as its model (`best_weights` says raw or ema), so it needs no
`--ema`.

This module imports argparse and pathlib only: every command's parser is built from it on every
run, `twins --help` included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The device names `twins.device.select_device` takes (written out here, as importing that
# module imports torch).
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def positive_int(text: str) -> int:
    """An integer of at least 1 (counts and sizes: 0 would not mean "the default")."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1], such as a crop fraction."""
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from error
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1, not {text}")
    return value


# `twins.weights.locate.WEIGHT_FILES`, written out so that parsing imports no torch (a test
# keeps them equal).
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_file(text: str) -> str:
    """A weights file's path, a Hub-layout folder, an `hf-hub:` id or a URL
    (`twins.weights.locate`); another folder is refused here, as the readers would only say that
    the file does not exist. A missing file is left to them (their message names the format)."""
    path = Path(text).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in HUB_WEIGHT_FILES):
        raise argparse.ArgumentTypeError(
            f"{text} is a folder, not a weights file: name a file in it "
            "(a training run keeps checkpoints/best.pt and checkpoints/last.pt), or a folder in "
            f"the Hub layout (with {' or '.join(HUB_WEIGHT_FILES)})"
        )
    return text


def output_folder(text: str) -> str:
    """A folder to write into, existing or not; an existing file is refused."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a file, not a folder: name a folder (it is created when missing)"
        )
    return text


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=weights_file,
        metavar="FILE",
        help="weights: a training checkpoint, an official or timm .pth, .safetensors, a "
        "MindSpore .ckpt of the seed (judged by content) or a Hub-layout folder; local, "
        "hf-hub:org/name[@revision] or s3:// / obs://",
    )


def add_arch(parser: argparse.ArgumentParser, *, config_key: bool = False) -> None:
    parser.add_argument(
        "--arch",
        metavar="NAME",
        help="model the weights belong to, where the file does not say (e.g. svt_small)"
        + ("; sets arch" if config_key else ""),
    )


def model_arguments(text: str) -> dict:
    """`--model-args`: a YAML / JSON mapping of create_model arguments."""
    import yaml  # light; only read when the option is given

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YAML mapping") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a mapping: write e.g. '{{num_heads: [1, 2, 4, 8]}}'"
        )
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-args",
        type=model_arguments,
        metavar="MAPPING",
        help="create_model arguments of the model, where the file does not record them "
        "(weights saved without metadata of a model with its own shape), e.g. "
        "'{num_heads: [1, 2, 4, 8]}'",
    )


def add_ema(parser: argparse.ArgumentParser, *, evaluates_both: bool = False) -> None:
    use = (
        "evaluate them too, beside the raw weights (sets with_ema=true)"
        if evaluates_both
        else "use them instead of the raw weights"
    )
    parser.add_argument(
        "--ema",
        action="store_true",
        help=f"the EMA weights of a training checkpoint (a run with with_ema=true): {use}",
    )


def add_device(parser: argparse.ArgumentParser, *, names: tuple[str, ...] = DEVICE_NAMES) -> None:
    """`--device`; `names` narrows the choice for a command that takes fewer devices."""
    choices = None if names == DEVICE_NAMES else names
    parser.add_argument(
        "--device",
        default="auto",
        choices=choices,
        metavar="DEVICE",
        help="auto (the default): a GPU when there is one, else the CPU; or "
        + ", ".join(names[1:]),
    )


def add_json(parser: argparse.ArgumentParser, *, prints: str = "one JSON object") -> None:
    """`--json`; `prints` says what the command then writes to stdout."""
    parser.add_argument("--json", action="store_true", help=f"print JSON instead of text; {prints}")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, anywhere among the options (e.g. epochs=5 seed=1)",
    )


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from error
