"""`twins predict`: top-k classes of images, folders or globs."""

from __future__ import annotations

import argparse
import json

from twins.predict import format_run, predict


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a trained model",
        description="Print the top-k classes of each image. IMAGE may be a file, a folder "
        "(searched recursively) or a glob pattern. Class names come from the weights file, or "
        "are the ImageNet-1k names for a 1000-class model. Unreadable images are reported and "
        "skipped.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders, globs")
    parser.add_argument("--checkpoint", required=True, help="weights file (any supported format)")
    parser.add_argument("--arch", help="model name, where the file does not say (e.g. svt_small)")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--image-size", type=int, help="crop size (default: checkpoint's or 224)")
    parser.add_argument(
        "--crop-pct", type=float, help="crop fraction (default: checkpoint's or 0.875)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto)")
    parser.add_argument(
        "--ema", action="store_true", help="use a training checkpoint's EMA weights"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = predict(
        args.checkpoint,
        args.images,
        topk=args.topk,
        batch_size=args.batch_size,
        arch=args.arch,
        ema=args.ema or None,
        device=args.device,
        image_size=args.image_size,
        crop_pct=args.crop_pct,
    )
    print(json.dumps(result.to_json()) if args.json else format_run(result))
    return 0 if result.predictions else 1
