"""`twins demo [--output DIR] [key=value ...]`: the whole job on the built-in digits."""

from __future__ import annotations

import argparse

from twins.cli.options import add_overrides, output_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small Twins on the built-in handwritten digits",
        description="Write scikit-learn's 1,797 handwritten digits as train/ and val/ class "
        "folders under the output folder, train a small Twins-PCPVT on them with "
        "configs/demo.yaml (the code path of `twins train`), evaluate it, draw its predictions "
        "on validation images, and print the final val top-1 and where everything is. "
        "Run again on the same folder, it resumes (or just reports a finished run).",
    )
    parser.add_argument(
        "--output",
        type=output_folder,
        metavar="DIR",
        help="output folder (default: runs/demo; runs/demo-detect with --task detect)",
    )
    parser.add_argument(
        "--task",
        choices=("classify", "detect"),
        default="classify",
        help="classify: the digits (default); detect: a RetinaNet on scenes of digits "
        "(configs/demo_detect.yaml), data in COCO layout under DIR/data",
    )
    add_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "detect":
        from twins.dense.det_demo import run_detect_demo

        run_detect_demo(args.output or "runs/demo-detect", args.overrides)
        return 0
    from twins.demo import run_demo

    run_demo(args.output or "runs/demo", args.overrides)
    return 0
