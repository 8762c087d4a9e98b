"""`twins convert SRC DST`: weights between official/timm `.pth`, MindSpore `.ckpt`, safetensors."""

from __future__ import annotations

import argparse

from twins.cli.options import add_arch, add_ema, add_model_args, weights_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert weights between .pth, MindSpore .ckpt, .safetensors and the Hub layout",
        description="Convert weights. SRC may be an official or timm .pth, a training "
        "checkpoint of this toolkit, a MindSpore .ckpt of the seed, a .safetensors file "
        "(judged by content) or a Hub-layout folder, local, hf-hub:org/name[@revision] or "
        "s3:// / obs://. DST's extension picks the format: .safetensors, .pth / .pt "
        "(official-layout state dict), .ckpt (the seed's MindSpore layout), none: a folder in "
        "the Hugging Face Hub layout (as `twins export --format hf`); each keeps the "
        "model's description (arch, model_args, GELU, classes, preprocessing). With --arch the "
        "weights are checked against that model and described in DST's metadata.",
    )
    parser.add_argument("source", type=weights_file, metavar="SRC", help="weights to read")
    parser.add_argument(
        "destination",
        metavar="DST",
        help="file to write (.safetensors, .pth, .ckpt), or a folder (the Hub layout)",
    )
    add_arch(parser)
    add_model_args(parser)
    add_ema(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.convert import convert

    result = convert(
        args.source,
        args.destination,
        arch=args.arch,
        model_args=args.model_args,
        ema=args.ema or None,
    )
    described = result.metadata.get("arch") or "architecture not recorded (use --arch)"
    print(
        f"wrote {args.destination}: {result.tensors} tensors, {result.source_format} -> "
        f"{result.destination_format}, {described}"
    )
    return 0
