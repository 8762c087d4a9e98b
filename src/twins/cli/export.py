"""`twins export`: ONNX, torch.export `.pt2`, OpenVINO IR (float32 or int8), safetensors release
weights or the Hugging Face Hub layout from a checkpoint."""

from __future__ import annotations

import argparse

from twins.cli.options import add_arch, add_checkpoint, add_ema, add_model_args, positive_int

# `twins.export.engine.EXPORT_FORMATS`, written out so that building this parser does not import torch
# (a test keeps them equal).
FORMATS = ("onnx", "pt2", "safetensors", "hf", "openvino")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX, .pt2, OpenVINO, safetensors or the Hub layout (hf)",
        description="Export the model of a weights file (any format `twins convert` reads). "
        "ONNX and .pt2 take any batch, height and width from the model's smallest input (32 px "
        "for the variants) up, and are checked "
        "against PyTorch (ONNX in onnxruntime) before the command reports success; run a .pt2 "
        "with torch.export.load(path).module(). OpenVINO writes model.xml and model.bin "
        "(float32, checked in OpenVINO's CPU plugin; --int8 quantises it with NNCF). "
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
        help="file to write, named as its format: .onnx, .pt2, .xml (OpenVINO) or "
        ".safetensors; for hf, a folder",
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
    parser.add_argument(
        "--int8",
        action="store_true",
        help="OpenVINO: quantise to int8 with NNCF on --calibration images; refused when the "
        "task's metric (top-1, mIoU) drops by more than --max-drop on their held-out half",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="images for --int8: class folders (classifier) or images/ and annotations/ "
        "(segmenter), at least 16",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="largest loss of top-1 or mIoU (in points) that --int8 accepts (default 0.5)",
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
        int8=args.int8,
        calibration=args.calibration,
        max_drop=args.max_drop,
    )
    print(f"wrote {result.path} ({result.format})")
    for shape, difference in result.differences.items():
        print(
            f"  checked input {'x'.join(map(str, shape))}: max relative difference {difference:.1e}"
        )
    for line in getattr(result, "lines", ()):  # what an int8 export measured
        print(f"  {line}")
    return 0
