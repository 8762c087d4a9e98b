"""`twins eval -c CONFIG --checkpoint FILE [--data DIR] [--json] [key=value ...]`."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate weights on a validation folder",
        description="Top-1 / top-5 accuracy in %, mean cross entropy and image count of a "
        "weights file (training checkpoint, official or timm .pth, safetensors, MindSpore .ckpt) "
        "on data_url/val, with the recipe's eval transform (resize image_size / crop_pct, centre "
        "crop). Under torchrun every image is counted once across the processes.",
    )
    parser.add_argument("-c", "--config", required=True, help="YAML recipe")
    parser.add_argument("--checkpoint", required=True, help="weights file")
    parser.add_argument("--data", help="data folder holding val/ (sets data_url)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.train import evaluate_checkpoint, load_config
    from twins.train.distributed import is_main_process

    config = load_config(args.config, args.overrides, data_url=args.data)
    result = evaluate_checkpoint(config, args.checkpoint)
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['arch']} on {config.data_url}/val: top-1 {result['top1']:.2f}%  "
        f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  ({result['images']} images)"
    )
    if "ema" in result:
        ema = result["ema"]
        print(
            f"EMA weights: top-1 {ema['top1']:.2f}%  top-5 {ema['top5']:.2f}%  loss {ema['loss']:.4f}"
        )
    return 0
