"""`twins export`: ONNX, torch.export `.pt2`, safetensors release weights or the Hugging Face Hub
layout from a checkpoint."""

from __future__ import annotations

import argparse

from twins.cli.options import add_arch, add_checkpoint, add_ema, add_model_args, positive_int

# `twins.export.engine.EXPORT_FORMATS`, written out so that building this parser does not import torch
# (a test keeps them equal).
FORMATS = ("onnx", "pt2", "safetensors", "hf")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX, torch.export (.pt2), safetensors or the Hub layout (hf)",
        description="Export the model of a weights file (any format `twins convert` reads). "
        "ONNX and .pt2 take any batch, height and width from the model's smallest input (32 px "
        "for the variants) up, and are checked "
        "against PyTorch (ONNX in onnxruntime) before the command reports success; run a .pt2 "
        "with torch.export.load(path).module(). "
        "safetensors holds the weights only, with the metadata that rebuilds the model. "
        "hf writes a folder in the Hugging Face Hub layout (config.json, model.safetensors, a "
        "README.md model card): a classifier's is timm's, which timm.create_model("
        "'local-dir:DIR', pretrained=True) and transformers' AutoModelForImageClassification "
        "load; upload it with `hf upload ORG/NAME DIR`.",
    )
    add_checkpoint(parser)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write, named as its format: .onnx, .pt2 or .safetensors; for hf, a folder",
    )
    add_arch(parser)
    add_model_args(parser)
    add_ema(parser)
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=224,
        metavar="PIXELS",
        help="side of the images used to trace and check the export (default 224)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip comparing the export with PyTorch"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.tasks import export

    result = export(
        args.checkpoint,
        args.format,
        args.output,
        arch=args.arch,
        model_args=args.model_args,
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
