"""`twins benchmark`: images/s, step time, memory and share of peak, side by side with timm."""

from __future__ import annotations

import argparse
import json

from twins.cli.options import (
    add_device,
    add_json,
    model_arguments,
    non_negative_int,
    positive_int,
)

# `twins.benchmark.MODES` and `PRECISIONS`, written out so that building this parser does not
# import torch (a test keeps them equal).
MODES = ("infer", "train", "data")
PRECISIONS = ("fp32", "bf16", "fp16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="measure speed, optionally against timm",
        description="Time inference (forward), training (forward, backward, AdamW step) or the "
        "training data loader (images per CPU-second over all its processes). With --compare timm, timm's implementation of the same variant "
        "with the same weights runs on the same inputs, alternated with ours for several "
        "rounds; the median ratio is printed.",
    )
    parser.add_argument("--model", help="variant or alias (default: pcpvt_small)")
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="a training recipe: time the model it trains (arch, model_args, num_classes, "
        "drop_path_rate), with its compile and channels_last",
    )
    parser.add_argument(
        "--model-args",
        type=model_arguments,
        default={},
        metavar="JSON",
        help="create_model overrides, e.g. '{\"depths\": [1, 1, 1, 1]}'",
    )
    add_device(parser, names=("auto", "cpu", "cuda"))  # the benchmark takes the first GPU
    parser.add_argument("--mode", choices=MODES, default="infer")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast dtype")
    parser.add_argument(
        "--batch-size", type=positive_int, metavar="N", help="default: 16 on CPU, 256 on GPU"
    )
    parser.add_argument("--image-size", type=positive_int, default=224, metavar="PIXELS")
    parser.add_argument("--channels-last", action="store_true", help="channels-last inputs")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the models once per input size, as `compile: true` trains; without "
        "--compare, our model is also timed eagerly and the ratio is compiled over eager",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        metavar="N",
        help="untimed steps first (default 2 CPU, 5 GPU)",
    )
    parser.add_argument(
        "--iters",
        type=positive_int,
        metavar="N",
        help="timed steps per round (default 3 CPU, 20 GPU, 16 batches per pass in data mode)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=5, metavar="N", help="alternated rounds (median)"
    )
    parser.add_argument(
        "--compare",
        choices=("timm", "smp", "openvino"),
        help="also time timm's implementation (data mode: timm's loader, same recipe); for an "
        "upernet_<variant> model, smp: segmentation-models-pytorch's UperNet over timm's Twins "
        "(pip install 'twins[smp]'); for a classifier's float32 CPU inference, openvino: its "
        "OpenVINO IR in float32 and in int8 (calibrated on random inputs; pip install "
        "'twins[openvino]'), ratio = OpenVINO float32 images/s over ours",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data mode: folder of class folders, or packed data (folder or s3:// URL)",
    )
    parser.add_argument(
        "--workers", type=non_negative_int, default=4, metavar="N", help="data mode: loader workers"
    )
    parser.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, profile --iters more steps of each model and list the GPU kernels "
        "(CPU operators on CPU) taking the most time",
    )
    add_json(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.benchmark import BenchmarkOptions, format_report, run_benchmark

    model, model_args = args.model or "pcpvt_small", args.model_args
    compiled, channels_last = args.compile, args.channels_last
    if args.config is not None:
        model, model_args, compiled, channels_last = _run_model(args)
    options = BenchmarkOptions(
        model=model,
        model_args=model_args,
        device=None if args.device == "auto" else args.device,
        mode=args.mode,
        precision=args.precision,
        batch_size=args.batch_size,
        image_size=args.image_size,
        channels_last=channels_last,
        compile=compiled,
        warmup=args.warmup,
        iters=args.iters,
        rounds=args.rounds,
        compare=args.compare,
        data=args.data,
        workers=args.workers,
        threads=args.threads,
        profile=args.profile,
    )
    result = run_benchmark(options)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _run_model(args: argparse.Namespace) -> tuple[str, dict, bool, bool]:
    """(model, create_model arguments, compile, channels_last) of the run `--config` describes;
    `--model-args` over its arguments, `--compile` and `--channels-last` over its switches."""
    from twins.errors import TwinsError
    from twins.train import load_config
    from twins.train.fit_loop import model_arguments

    if args.model is not None:
        raise TwinsError(
            f"--model {args.model} and --config {args.config} both name the model: give one",
            argument="model",
        )
    config = load_config(args.config)
    arguments = model_arguments(config) | args.model_args
    return (
        config.arch,
        arguments,
        args.compile or config.compile,
        args.channels_last or config.channels_last,
    )
