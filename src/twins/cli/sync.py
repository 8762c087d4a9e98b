"""`twins sync RUN --to mlflow|wandb`."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Send a training run's metrics (RUN/metrics.jsonl) to MLflow or W&B: what the tracker's run of
RUN lacks, each step once, and for a finished run its files and final evaluation. For a run
whose tracker was down, or a run trained without it. The tracker's address comes from RUN's
config.yaml (mlflow_tracking_uri, wandb_project, ...), else the environment
(MLFLOW_TRACKING_URI, WANDB_API_KEY, WANDB_MODE, ...)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="send a run's metrics to MLflow or W&B",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", metavar="RUN", help="a training run's output folder")
    parser.add_argument(
        "--to", required=True, choices=("mlflow", "wandb"), help="the tracker to send to"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.train.trackers.sync import sync

    result = sync(args.folder, args.to)
    print(
        f"{args.folder}: {result['sent']} of {result['records']} records sent to {args.to} "
        f"run {result['run_id']} (the rest it held)"
    )
    return 0
