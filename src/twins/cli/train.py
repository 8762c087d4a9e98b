"""`twins train -c CONFIG [--data DIR] [--output DIR] [key=value ...]`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from twins.train.config import describe_keys

    parser = subparsers.add_parser(
        "train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (default):\n" + describe_keys(),
        help="train a model from a YAML recipe",
        description="Train per a YAML recipe (the seed's key names; see configs/).\n"
        "Values come from the defaults, then the file, then key=value overrides, read as YAML\n"
        "(epochs=5 beta=[0.9,0.99] model_args.depths=[1,1,1,1]). A run lasts epochs +\n"
        "cooldown_epochs. Started again on the same output folder, a run resumes from its\n"
        "checkpoints/last.pt (written each epoch, and every save_every_steps steps) exactly\n"
        "where it stopped. Under torchrun it trains with DDP (NCCL on GPUs, gloo on CPUs);\n"
        "batch_size is per device: `torchrun --nproc_per_node=N -m twins train -c CONFIG`.\n"
        "Several nodes, SLURM and restarts: docs/distributed.md.",
    )
    parser.add_argument("-c", "--config", required=True, help="YAML recipe")
    parser.add_argument("--data", help="data folder with train/ and val/ (sets data_url)")
    parser.add_argument("--output", help="output folder (sets train_url; default runs/<recipe>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.train import fit, load_config

    config = load_config(args.config, args.overrides, data_url=args.data, train_url=args.output)
    fit(config)
    return 0
