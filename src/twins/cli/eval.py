"""`twins eval -c CONFIG --checkpoint FILE [--data DIR] [--json] [key=value ...]`."""

from __future__ import annotations

import argparse
import json

from twins.cli.options import add_arch, add_checkpoint, add_ema, add_json, add_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate weights on a validation folder",
        description="Top-1 / top-5 accuracy in %, mean cross entropy and image count of a "
        "weights file (training checkpoint, official or timm .pth, safetensors, MindSpore .ckpt) "
        "on data_url/val, with the recipe's eval transform (resize image_size / crop_pct, centre "
        "crop). With --ema (or with_ema=true in the recipe) a training checkpoint's EMA weights "
        "are evaluated too. Under torchrun every image is counted once across the processes. A "
        "segmenter (task segment in the config or the file) gives mIoU, mAcc, aAcc in % on "
        "data_url's images/validation, per class IoU and Acc with --json; tta=true tests at 6 "
        "scales with flips.",
    )
    parser.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML recipe")
    add_checkpoint(parser)
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data folder holding val/, or a packed data set: its folder or URL (sets data_url)",
    )
    add_arch(parser, config_key=True)
    add_ema(parser, evaluates_both=True)
    add_json(parser)
    add_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.tasks import task_for
    from twins.train import load_config
    from twins.train.distributed import is_main_process
    from twins.train.evaluate import evaluate_checkpoint

    config = load_config(
        args.config,
        args.overrides,
        data_url=args.data,
        arch=args.arch,
        with_ema=True if args.ema else None,
    )
    task = task_for(config)
    # Asked for by name, EMA weights are required: a file without them is refused, as elsewhere.
    result = evaluate_checkpoint(config, args.checkpoint, task, ema=True if args.ema else None)
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    print(json.dumps(result) if args.json else task.describe_evaluation(result, config.data_url))
    return 0
