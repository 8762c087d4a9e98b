"""`twins predict`: top-k classes of images, folders or globs (a detector's objects)."""

from __future__ import annotations

import argparse
import json

from twins.cli.options import (
    add_arch,
    add_checkpoint,
    add_device,
    add_ema,
    add_json,
    add_model_args,
    fraction,
    output_folder,
    positive_int,
)
from twins.errors import TwinsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a trained model (or segment them, or detect objects)",
        description="Print the top-k classes of each image. IMAGE may be a file, a folder "
        "(searched recursively), a glob pattern or @list.txt (a file of inputs, one a line); with "
        "--out also an object-store prefix or a packed data set. --checkpoint may be any weights file or an "
        "exported model (.onnx, .pt2). Class names come from the weights file, or "
        "are the ImageNet-1k names for a 1000-class model. Unreadable images are reported and "
        "skipped. A segmenter writes each image's label map (an indexed PNG in the data set's "
        "label values and colours) and an overlay to --output. A detector's file prints each "
        "image's detections instead (--json: one array of COCO result objects, as pycocotools' "
        "loadRes reads them) and, with --output, draws them on a picture per image.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders, globs")
    add_checkpoint(parser)
    add_arch(parser)
    add_model_args(parser)
    add_ema(parser)
    parser.add_argument(
        "--topk", type=positive_int, metavar="K", help="classifiers: classes per image (default 5)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="classifiers: images per forward pass (default 32)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PIXELS",
        help="crop size (default: the weights file's, else 224)",
    )
    parser.add_argument(
        "--crop-pct",
        type=fraction,
        metavar="FRACTION",
        help="crop fraction in (0, 1] (default: the weights file's, else 0.875)",
    )
    parser.add_argument(
        "--output",
        type=output_folder,
        metavar="DIR",
        help="segmenters: the folder for DIR/<name>.png and DIR/<name>_overlay.png, <name> the "
        "image's path under the folder holding all the images (never over an input); "
        "detectors: for DIR/<image stem>_detections.png, the image with its detections",
    )
    parser.add_argument(
        "--min-score",
        type=fraction,
        metavar="SCORE",
        help="detectors: the lowest score printed and drawn (default 0.5; --json lists all)",
    )
    parser.add_argument(
        "--coco",
        metavar="FILE",
        help="detectors: the COCO instances file of the images; each result's image_id is its "
        "entry's id, matched by file_name (default: 1, 2, ... in input order)",
    )
    parser.add_argument(
        "--slide",
        nargs=2,
        type=positive_int,
        metavar=("CROP", "STRIDE"),
        help="segmenters: test by sliding windows of CROP x CROP pixels every STRIDE pixels "
        "over the resized image (mmseg's slide mode), for images larger than the model's scale",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write one row per image to FILE (.jsonl, .csv or .parquet) as they are predicted; "
        "a rerun on the same FILE skips the images it holds; inputs may also be object-store "
        "prefixes (s3://) and packed data sets; under torchrun each process takes a share",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="with --out: replace FILE, even one written by another model",
    )
    add_device(parser)
    add_json(
        parser,
        prints="one object: predictions (image, top: index, label, probability; a segmenter's: "
        "image, label_map, overlay, classes present, their pixel counts), failures, preprocessing; for a detector, "
        "one array of COCO result objects (file_name, image_id, category_id, bbox, score, "
        "segmentation)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        return run_streamed(args)
    if args.overwrite:
        raise TwinsError("--overwrite replaces an --out file: give --out FILE too")
    from twins.tasks import predict

    result = predict(args.checkpoint, args.images, **_options(args))
    print(json.dumps(result.to_json()) if args.json else result.format())
    return 0 if result.predictions else 1


def run_streamed(args: argparse.Namespace) -> int:
    from twins.inference.stream import rank_and_world
    from twins.tasks.predictor import stream_predictions

    result = stream_predictions(
        args.checkpoint, args.images, args.out, overwrite=args.overwrite, **_options(args)
    )
    if rank_and_world()[0] == 0:  # the first process holds the merged file's figures
        print(json.dumps(result.to_json()) if args.json else result.format())
    return 0 if result.images or rank_and_world()[0] else 1


def _options(args: argparse.Namespace) -> dict:
    """The model's and the task's options, as `twins.tasks.predict` takes them."""
    return {
        "arch": args.arch,
        "model_args": args.model_args,
        "ema": args.ema or None,
        "device": args.device,
        "topk": args.topk,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "crop_pct": args.crop_pct,
        "output": args.output,
        "min_score": args.min_score,
        "coco": args.coco,
        "slide": args.slide,
    }
