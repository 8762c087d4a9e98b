"""`twins models`: the model zoo as a table (or JSON)."""

from __future__ import annotations

import argparse
import json

from twins.cli.options import add_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model variants",
        description="Each variant with its parameters (1000 classes), multiply-adds of one "
        "224x224 forward pass (counted by torch's FlopCounterMode, reported as the paper does), "
        "window sizes (SVT) and the aliases accepted for it.",
    )
    add_json(parser, prints="one object per model, one a line")
    parser.set_defaults(func=run)


def describe(name: str) -> dict:
    import torch

    from twins.models import VARIANTS, aliases_of, count_macs, create_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "gmacs": round(count_macs(model, 224) / 1e9, 2),
        "windows": VARIANTS[name].get("wss"),
        "aliases": aliases_of(name),
    }


def run(args: argparse.Namespace) -> int:
    from twins.models import VARIANTS

    rows = [describe(name) for name in VARIANTS]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'name':<12} {'params':>12} {'GFLOPs@224':>10}  {'windows':<8} aliases")
    for row in rows:
        windows = ",".join(map(str, row["windows"])) if row["windows"] else "-"
        print(
            f"{row['name']:<12} {row['params']:>12,} {row['gmacs']:>10.2f}  {windows:<8} "
            f"{', '.join(row['aliases'])}"
        )
    return 0
