"""`twins sync RUN --to mlflow|wandb`: send a run's `metrics.jsonl` to a tracker, to the
tracker run its checkpoint names (else, for MLflow, the latest run of the same output folder,
else a new one), leaving out what that run already holds, each step once; a finished run's
files and final evaluation too. The tracker's address and names come from the run's
config.yaml (else the environment, as in the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twins import storage
from twins.config import build_config, read_yaml
from twins.errors import TwinsError
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint
from twins.train.trackers import PACKAGES, TrackerStart, check_loggers, short, tracker_module


def sync(folder: str | Path, to: str) -> dict[str, Any]:
    """Send to the tracker `to` what its run of the output `folder` lacks; returns the tracker's
    run id (`run_id`), the records `sent` (wholly or in part) of all `records`."""
    if to not in PACKAGES:
        raise TwinsError(f"cannot sync to {to!r}: use one of {', '.join(PACKAGES)}", argument="to")
    if storage.is_remote(str(folder)):
        raise TwinsError(
            f"{folder} is an object-store URL: download the run folder and sync it from there",
            argument="folder",
        )
    folder = Path(folder).expanduser()
    if not (folder / "metrics.jsonl").is_file() or not (folder / "config.yaml").is_file():
        raise TwinsError(
            f"{folder} holds no metrics.jsonl and config.yaml: give a training run's output folder",
            argument="folder",
        )
    check_loggers([to])
    values = read_yaml(folder / "config.yaml")
    config = build_config(values, source=str(folder / "config.yaml"))
    last = folder / "checkpoints" / "last.pt"
    saved = load_checkpoint(last) if last.is_file() else {}
    module = tracker_module(to)
    start = TrackerStart(
        folder=folder,
        output=str(folder.resolve()),
        run_id=(saved.get("trackers") or {}).get(to) or module.fresh_id(),
        resumed=True,
        params=values,
    )
    records = read_metrics(folder / "metrics.jsonl")
    try:
        tracker = module.open_run(config, start)
        sent = sum(tracker.log(record) for record in records)
        if saved and _finished(saved, config):
            final = saved.get("metrics") or {}  # the last epoch's record
            tracker.finish(folder, {k: v for k, v in final.items() if isinstance(v, (int, float))})
        tracker.close()
    except Exception as error:
        raise TwinsError(
            f"cannot send {folder} to {to} ({short(error)}): check the tracker's address and "
            "key (config.yaml's or the environment's) and run again; nothing sent is sent twice"
        ) from error
    return {"run_id": tracker.run_id, "sent": sent, "records": len(records)}


def _finished(saved: dict[str, Any], config: Any) -> bool:
    if config.counts_iterations:
        return saved.get("global_step", 0) >= config.max_iters
    return saved.get("epoch", 0) >= config.total_epochs
