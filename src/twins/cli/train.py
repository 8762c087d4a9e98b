"""`twins train -c CONFIG [--data DIR] [--output DIR] [key=value ...]`."""

from __future__ import annotations

import argparse

from twins.cli.options import add_overrides, output_folder

DESCRIPTION = """\
Train per a YAML recipe (the seed's key names; see configs/).
Values come from the defaults, then the file, then key=value overrides, read as YAML
(epochs=5 beta=[0.9,0.99] model_args.depths=[1,1,1,1]). `semantics` says whose training
math the keys mean: seed (the default, as the seed's own files are), official or twins
(docs/recipes.md); only under twins does a run also train its cooldown_epochs.
Started again on the same output folder, a run resumes from its checkpoints/last.pt
(written each epoch, and every save_every_steps steps) exactly where it stopped; SIGTERM
or Ctrl-C ends it after the current step with last.pt written there. One run at a time
per output folder. Under torchrun it trains with DDP (NCCL on GPUs, gloo on CPUs);
batch_size is per device: `torchrun --nproc_per_node=N -m twins train -c CONFIG`.
Several nodes, SLURM, pre-emption and restarts: docs/distributed.md. An output URL
(s3://bucket/prefix, obs://...) is written through a local staging folder and uploaded at
every checkpoint; credentials from the AWS variables: docs/data.md."""

# Stands for the list of config keys at the end of the help (see `_HelpFormatter`).
CONFIG_KEYS_EPILOG = "config keys (default):"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Writes the config keys under the help only when the help is printed: the list comes
    from `twins.config`, which a parser built on every run should not import."""

    def add_text(self, text: str | None) -> None:
        if text == CONFIG_KEYS_EPILOG:
            from twins.config import describe_keys

            text = f"{CONFIG_KEYS_EPILOG}\n{describe_keys()}"
        super().add_text(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        epilog=CONFIG_KEYS_EPILOG,
        help="train a model from a YAML recipe",
        description=DESCRIPTION,
    )
    parser.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML recipe")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data folder with train/ and val/, or a packed data set (twins pack): its folder "
        "or URL (sets data_url)",
    )
    parser.add_argument(
        "--output",
        type=output_folder,
        metavar="DIR",
        help="output folder, or a bucket URL s3://... / obs://... (sets train_url; default "
        "runs/<recipe>; see docs/data.md)",
    )
    before = parser.add_mutually_exclusive_group()
    before.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML (what `twins train -c` reads back as the same "
        "run) and start nothing",
    )
    before.add_argument(
        "--dry-run",
        action="store_true",
        help="scan the data, build the model, read one batch, print the lr landmarks and the "
        "steps, time one step and its peak memory; write nothing",
    )
    add_overrides(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twins.tasks import task_for
    from twins.train import config_yaml, dry_run, fit, load_config

    config = load_config(args.config, args.overrides, data_url=args.data, train_url=args.output)
    task = task_for(config)
    if args.print_config:
        print(config_yaml(config, task.reads), end="")
    elif args.dry_run:
        dry_run(config, task)
    else:
        fit(config, task)
    return 0
