"""`twins demo [--task classify|segment|detect] [--output DIR] [key=value ...]`: the whole job on the
built-in digits."""

from __future__ import annotations

import argparse

from twins.cli.options import add_overrides, output_folder

TASKS = ("classify", "segment", "detect")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate a small Twins on the built-in handwritten digits",
        description="Write scikit-learn's 1,797 handwritten digits as train/ and val/ class "
        "folders under the output folder, train a small Twins-PCPVT on them with "
        "configs/demo.yaml (the code path of `twins train`), evaluate it, draw its predictions "
        "on validation images, and print the final val top-1 and where everything is. "
        "With --task segment: scenes of the digits in the ADE20K layout under DIR/data and a "
        "small Twins + Semantic FPN trained on them with configs/demo_segment.yaml; it prints "
        "the final val mIoU. With --task detect: the scenes in COCO layout under DIR/data and a "
        "small Twins RetinaNet trained on them with configs/demo_detect.yaml; it prints the box "
        "AP. Run again on the same folder, it resumes (or just reports a "
        "finished run).",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classify",
        help="classify the digits, or segment or detect them in scenes (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=output_folder,
        metavar="DIR",
        help="output folder (default: runs/demo; runs/demo-segment, runs/demo-detect by task)",
    )
    add_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.tasks import run_demo

    run_demo(args.task, args.output, args.overrides)
    return 0
