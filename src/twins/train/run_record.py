"""What made a run: `run.json` in its output folder, and the same record in every checkpoint's
`meta["run"]` (so `twins.load_model(file).run_record` says it of the weights).

The record: the command line, when this start began, the versions (`twins.environment`), the
device, the GPUs seen and the CPU model, the world size, the source checkout's commit (None
outside one), the data set's identity (a packed set's manifest sha256, else the images per
split) and the seed; where the start resumed a run, the epoch and step it went on from.
`run.json` keeps the records of the earlier starts of the same run under "earlier".
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from twins import storage
from twins.atomic import write_text
from twins.console import debug
from twins.data.packed import format as packed
from twins.environment import accelerators, cpu_model, source_commit, versions

RUN_JSON = "run.json"


def run_record(
    config: Any, device: Any, world_size: int, splits: dict[str, Any], saved: dict | None
) -> dict[str, Any]:
    """The record of this start of the run `config` describes, on `device` with `world_size`
    processes, reading the data sets `splits` ({"train": ..., "val": ...}), resuming `saved`
    (the checkpoint it goes on from, or None)."""
    resumed = None
    if saved:
        resumed = {"epoch": saved["epoch"], "step": saved["global_step"]}
    return {
        "command": shlex.join(sys.argv),
        "started": now(),
        "versions": versions(),
        "device": str(device),
        "gpus": accelerators(),
        "cpu": cpu_model(),
        "world_size": world_size,
        "commit": source_commit(),
        "data": data_identity(config.data_url, splits),
        "seed": config.seed,
        "resumed_at": resumed,
    }


def data_identity(url: str, splits: dict[str, Any]) -> dict[str, Any]:
    """Which data a run reads: its URL and a packed set's manifest sha256 (the manifest names
    every shard with its size and hash), else how many images each split holds."""
    identity: dict[str, Any] = {"url": storage.display(url)}
    if packed.is_packed(url):
        manifest = storage.read_bytes(storage.join(url, packed.MANIFEST))
        identity["manifest_sha256"] = hashlib.sha256(manifest).hexdigest()
    else:
        identity["images"] = {name: len(data) for name, data in splits.items()}
    return identity


def write_run_json(folder: str | Path, record: dict[str, Any]) -> None:
    """`run.json` in `folder`: `record`, after the records of the run's earlier starts."""
    path = Path(folder) / RUN_JSON
    earlier: list[dict[str, Any]] = []
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        earlier = [*before.pop("earlier", []), before]
    except (FileNotFoundError, ValueError, AttributeError):
        pass  # a first start, or a file cut short before atomic writes: started anew
    write_text(path, json.dumps({**record, "earlier": earlier}, indent=2) + "\n")
    debug(f"wrote {path}")


def now() -> str:
    """The time in UTC, to the second, as ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
