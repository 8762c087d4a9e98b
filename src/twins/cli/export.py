"""`twins export`: ONNX, torch.export `.pt2` or safetensors release weights from a checkpoint."""

from __future__ import annotations

import argparse

from twins.export import EXPORT_FORMATS, MIN_SIDE, export


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX, torch.export (.pt2) or safetensors",
        description="Export the model of a weights file (any format `twins convert` reads). "
        f"ONNX and .pt2 take any batch, height and width (>= {MIN_SIDE} px) and are checked "
        "against PyTorch (ONNX in onnxruntime) before the command reports success; run a .pt2 "
        "on a single image with torch.export.load(path).module(check_guards=False). "
        "safetensors holds the weights only, with the metadata that rebuilds the model.",
    )
    parser.add_argument("--checkpoint", required=True, help="weights file to export")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("-o", "--output", required=True, help="file to write")
    parser.add_argument("--arch", help="model name, where the file does not say (e.g. svt_small)")
    parser.add_argument(
        "--ema", action="store_true", help="export the EMA weights of a training checkpoint"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="side of the images used to trace and check the export (default 224)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip comparing the export with PyTorch"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export(
        args.checkpoint,
        args.format,
        args.output,
        arch=args.arch,
        ema=args.ema or None,
        image_size=args.image_size,
        check=not args.no_check,
    )
    print(f"wrote {result.path} ({result.format})")
    for shape, difference in result.differences.items():
        print(
            f"  checked input {'x'.join(map(str, shape))}: max relative difference {difference:.1e}"
        )
    return 0
