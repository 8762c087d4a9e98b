"""`twins models`: the model zoo as a table (or JSON): the classifiers, then the dense models."""

from __future__ import annotations

import argparse
import json
from typing import Any

from twins.cli.options import add_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model variants",
        description="Each variant with its parameters (1000 classes), multiply-adds of one "
        "224x224 forward pass (counted by torch's FlopCounterMode, reported as the paper does), "
        "window sizes (SVT) and the aliases accepted for it; then each dense model (Semantic "
        "FPN, UperNet, RetinaNet, Mask R-CNN over each variant) with its task, its parameters "
        "(the official data set's classes) and the paper's count, which includes the unused "
        "classifier the official dense backbone keeps.",
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
        "task": "classify",
        "params": sum(p.numel() for p in model.parameters()),
        "gmacs": round(count_macs(model, 224) / 1e9, 2),
        "windows": VARIANTS[name].get("wss"),
        "aliases": aliases_of(name),
    }


def describe_dense() -> list[dict]:
    """A row per dense model whose head's builder is installed (built on the meta device)."""
    from twins.models import VARIANTS
    from twins.tasks import HEADS_OF_TASK
    from twins.tasks.head import builder_of

    rows = []
    for task, heads in HEADS_OF_TASK.items():
        for head, spec in heads.items():
            try:
                build = builder_of(heads, head)
            except ImportError:  # a head whose module this installation lacks
                continue
            rows += [_dense_row(task, head, variant, spec, build) for variant in VARIANTS]
    return rows


def _dense_row(task: str, head: str, variant: str, spec: Any, build: Any) -> dict:
    import torch

    from twins.tasks.paper import PAPER_PARAMS_M

    name = f"{head}_{variant}"
    model = build(variant, num_classes=spec.default_classes, device=torch.device("meta"))
    return {
        "name": name,
        "task": task,
        "params": sum(p.numel() for p in model.parameters()),
        "paper_params_m": PAPER_PARAMS_M.get(name),
    }


def run(args: argparse.Namespace) -> int:
    from twins.models import VARIANTS

    rows = [describe(name) for name in VARIANTS]
    dense = describe_dense()
    if args.json:
        for row in rows + dense:
            print(json.dumps(row))
        return 0
    print(f"{'name':<12} {'params':>12} {'GFLOPs@224':>10}  {'windows':<8} aliases")
    for row in rows:
        windows = ",".join(map(str, row["windows"])) if row["windows"] else "-"
        print(
            f"{row['name']:<12} {row['params']:>12,} {row['gmacs']:>10.2f}  {windows:<8} "
            f"{', '.join(row['aliases'])}"
        )
    if dense:
        print(f"\n{'dense model':<26} {'task':<8} {'params':>12} {'paper (M)':>10}")
        for row in dense:
            paper = "-" if row["paper_params_m"] is None else f"{row['paper_params_m']:.1f}"
            print(f"{row['name']:<26} {row['task']:<8} {row['params']:>12,} {paper:>10}")
    return 0
