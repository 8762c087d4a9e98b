"""Weights & Biases: one W&B run per output folder, in `wandb_project` (else `WANDB_PROJECT`,
else "twins") of `wandb_entity` (else `WANDB_ENTITY`, else the account's default);
`WANDB_MODE=offline` keeps it in local files for `wandb sync`. Its files go to `WANDB_DIR`,
else the output folder. The resolved config is the run's config, each record a history row
at the run's step; at the end the final evaluation is its summary and config.yaml, curves.png
and run.json its files.

The run id is chosen when the run begins, so a run W&B could not take then keeps it for a
later sync. A resumed run sends no step below the first one W&B still lacks: the step the
server says the run is at, or offline, the step after the last row of the run's local files.
W&B writes a step's row once the next step begins, so a row is whole or absent; offline, a
killed run's file may lose all it buffered, which the resumed run sends again from
metrics.jsonl (`catch_up`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from twins.train.trackers.interface import TrackerStart, scalars, short
from twins.train.trackers.wandb_file import history, run_files

FILES = ("config.yaml", "curves.png", "run.json")


def project(config: Any) -> str:
    return config.wandb_project or os.environ.get("WANDB_PROJECT") or "twins"


def wandb_dir(start: TrackerStart) -> Path:
    return Path(os.environ.get("WANDB_DIR") or start.folder)


class WandbTracker:
    name = "wandb"

    def __init__(self, config: Any, start: TrackerStart) -> None:
        import wandb

        folder = wandb_dir(start)
        held = [row for path in run_files(folder, start.run_id) for row in history(path)]
        self.run = wandb.init(
            project=project(config),
            entity=config.wandb_entity or os.environ.get("WANDB_ENTITY") or None,
            id=start.run_id,
            name=Path(start.output).name,
            resume="allow",
            config=start.params,
            allow_val_change=True,  # a resumed run may change data_url and the like
            dir=str(folder),
            # Its console capture would wrap the run's output; W&B's own lines stay quiet.
            settings=wandb.Settings(
                console="off",
                silent=True,
                # A server that cannot be reached must not hold the run for W&B's 90 s.
                init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 30)),
            ),
        )
        self.run_id = self.run.id
        self.next_step = max([self.run.step, *(row["_step"] + 1 for row in held)])

    def log(self, record: dict[str, Any]) -> bool:
        step = int(record["step"])
        if step < self.next_step:
            return False  # W&B holds this step's row
        self.run.log(scalars(record), step=step)
        return True

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.log(record)

    def flush(self) -> None:
        """W&B sends in the background."""

    def finish(self, folder: Path, final: dict[str, Any]) -> None:
        self.run.summary.update({f"final/{key}": value for key, value in final.items()})
        for name in FILES:
            if (folder / name).is_file():
                self.run.save(str(folder / name), base_path=str(folder), policy="now")

    def close(self) -> None:
        self.run.finish()


def fresh_id() -> str:
    return uuid.uuid4().hex[:12]


def open_run(config: Any, start: TrackerStart) -> WandbTracker:
    return WandbTracker(config, start)


def unreachable(config: Any, start: TrackerStart, error: BaseException) -> str:
    return (
        f"warning: W&B run {start.run_id} in project {project(config)} cannot start "
        f"({short(error)}): check WANDB_API_KEY (or WANDB_MODE=offline); the run goes on "
        f"without it, its metrics are in metrics.jsonl; `twins sync {start.output} --to "
        "wandb` sends them later"
    )
