"""`twins pack SRC OUT [--shard-size 512MB] [--resize-short N] [--workers N]`,
`twins pack --index-only SRC` and `twins pack --verify OUT`."""

from __future__ import annotations

import argparse

from twins.cli.options import positive_int

DESCRIPTION = """\
Pack an ImageFolder (SRC/train/<class>/<image>, SRC/val/<class>/<image>) or a Parquet set in
the Hub's layout (SRC/data/train-*.parquet, SRC/data/validation-*.parquet) into
WebDataset-compatible tar shards with a per-shard index, manifest.json and timm's _info.json.
OUT is a folder or an object-store URL (s3://bucket/prefix). The files packed are those
`twins train` would read from SRC; each split is shuffled across classes with --seed.
Train from the result with --data OUT (or data_url=OUT). Run again after an interruption:
whole shards are kept, the rest written. docs/data.md describes the format.

--index-only SRC writes the index and manifest beside WebDataset tar shards already in SRC
(timm's layout with _info.json, or {prefix}-train-NNNN.tar / {prefix}-validation-NNNN.tar),
without changing them: then train with --data SRC."""


def byte_size(text: str) -> int:
    """A size such as 512MB, 1GB, 300MiB or a number of bytes."""
    from twins.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pack",
        help="pack an ImageFolder into tar shards (local folder or object store)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", nargs="?", metavar="SRC", help="ImageFolder with train/, val/, or a Parquet set"
    )
    parser.add_argument("output", nargs="?", metavar="OUT", help="folder or s3://bucket/prefix")
    parser.add_argument(
        "--shard-size",
        type=byte_size,
        default="512MB",
        metavar="SIZE",
        help="about this many bytes per shard (default 512MB)",
    )
    parser.add_argument(
        "--resize-short",
        type=positive_int,
        metavar="N",
        help="re-encode images (JPEG) with the short side resized to N pixels when longer: "
        "smaller, faster shards, but this changes the training data (recorded in the manifest)",
    )
    parser.add_argument(
        "--workers", type=positive_int, metavar="N", help="processes (default: every CPU)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default 0)")
    parser.add_argument(
        "--verify",
        metavar="PACKED",
        help="instead of packing, check every shard of PACKED against its manifest (sha256)",
    )
    parser.add_argument(
        "--index-only",
        action="store_true",
        help="index the WebDataset tar shards in SRC in place (no OUT; the tars are not changed)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.console import progress_shown
    from twins.errors import TwinsError

    if args.verify:
        from twins.data.packed.reader import verify_packed

        shards = verify_packed(args.verify)
        print(f"{args.verify}: all {shards} shards match the manifest")
        return 0
    if args.index_only:
        return _index_only(args)
    if not args.source or not args.output:
        raise TwinsError("give SRC and OUT (or --verify PACKED)", argument="source")
    from twins.data.packed.writer import pack

    report = pack(
        args.source,
        args.output,
        shard_size=args.shard_size,
        resize_short=args.resize_short,
        workers=args.workers,
        seed=args.seed,
        progress=progress_shown(),
    )
    counts = ", ".join(f"{n} {split}" for split, n in report.samples.items())
    kept = f" ({report.kept} kept from before)" if report.kept else ""
    print(
        f"packed {counts} images into {report.shards} shards, {report.bytes / 1e6:.1f} MB, "
        f"at {report.output}{kept}"
    )
    return 0


def _index_only(args: argparse.Namespace) -> int:
    from twins.data.packed.indexer import index_shards
    from twins.errors import TwinsError

    if not args.source or args.output:
        raise TwinsError("give SRC only with --index-only: the index is written beside its tars")
    report = index_shards(args.source)
    counts = ", ".join(f"{n} {split}" for split, n in report.samples.items())
    print(f"indexed {counts} samples in {report.shards} shards at {report.source}")
    if report.left_out:
        shown = ", ".join(report.left_out[:5]) + (" ..." if len(report.left_out) > 5 else "")
        print(f"left out {len(report.left_out)} samples (listed in manifest.json): {shown}")
    if report.not_indexed:
        print(f"not indexed: {len(report.not_indexed)} test shards ({report.not_indexed[0]}, ...)")
    return 0
