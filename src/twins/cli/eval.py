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
    from twins.train import evaluate_checkpoint, load_config
    from twins.train.distributed import is_main_process

    config = load_config(
        args.config,
        args.overrides,
        data_url=args.data,
        arch=args.arch,
        with_ema=True if args.ema else None,
    )
    # Asked for by name, EMA weights are required: a file without them is refused, as elsewhere.
    result = evaluate_checkpoint(config, args.checkpoint, ema=True if args.ema else None)
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result))
        return 0
    if config.task == "detect":
        from twins.tasks.detect.evaluate import describe

        print(describe(result, config.data_url))
        return 0
    if "mIoU" in result:  # a segmenter
        _print_segmentation(result, config.data_url)
        return 0
    print(
        f"{result['arch']} on {config.data_url}/val: top-1 {result['top1']:.2f}%  "
        f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  ({result['images']} images"
        + (f"; {result['left_out']})" if result.get("left_out") else ")")
    )
    if "ema" in result:
        ema = result["ema"]
        print(
            f"EMA weights: top-1 {ema['top1']:.2f}%  top-5 {ema['top5']:.2f}%  loss {ema['loss']:.4f}"
        )
    return 0


def _print_segmentation(result: dict, data: str) -> None:
    test = "multi-scale + flip test" if result["tta"] else "whole-image test"
    for name, metrics in (("", result), ("EMA weights: ", result.get("ema"))):
        if metrics:
            print(
                f"{name or result['arch'] + ' on ' + data + ': '}mIoU {metrics['mIoU']:.2f}%  "
                f"mAcc {metrics['mAcc']:.2f}%  aAcc {metrics['aAcc']:.2f}%  "
                f"({metrics['images']} images, {test})"
            )
