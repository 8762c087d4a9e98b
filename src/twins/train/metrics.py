"""What a run records: `metrics.jsonl`, the curves PNG and what its trackers get (TensorBoard
events, MLflow, W&B: `twins.train.trackers`), on rank 0 only.

Each `metrics.jsonl` line is one JSON object with `kind` ("step" every `log_every` optimizer
steps, "epoch" at the end of each epoch), `epoch` (1-based), `step` (optimizer steps so far),
`train_loss`, `lr` (the last step's rate at lr scale 1: under `layer_decay`, the head's), on
step lines of a dense task the parts of the last batch's loss (`train_<part>`), and on evaluated epochs `val_top1`, `val_top5` (%), `val_loss`,
`val_images`. A resumed run first drops the lines written after its checkpoint (step lines
past its step, epoch lines past its epochs done), so the file reads as if the run had never
stopped; TensorBoard does the same with `purge_step`, and the other trackers leave out the
steps they hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twins.atomic import write_text
from twins.train.curves import draw_curves
from twins.train.trackers import Tracker


class RunLog:
    def __init__(
        self,
        folder: str | Path,
        enabled: bool,
        resume_epoch: int,
        resume_step: int,
        score: tuple[str, str],
        trackers: Sequence[Tracker] = (),
    ):
        self.folder = Path(folder)
        self.enabled = enabled
        self.score = score  # the task's validation score the curves show: (key, label)
        self.trackers = list(trackers)
        self.records: list[dict[str, Any]] = []
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self.records = [
            r for r in read_metrics(self.path) if _before_resume(r, resume_epoch, resume_step)
        ]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        for tracker in self.trackers:
            tracker.catch_up(self.records)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _plain(v) for k, v in record.items()}
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        for tracker in self.trackers:
            tracker.log(record)

    def end_epoch(self) -> None:
        if not self.enabled:
            return
        for tracker in self.trackers:
            tracker.flush()
        draw_curves(self.records, self.folder / "curves.png", *self.score)

    def finish(self, final: dict[str, Any]) -> None:
        """At the run's end: the trackers get the run's files and `final` evaluation."""
        numbers = {k: _plain(v) for k, v in final.items()}
        numbers = {k: v for k, v in numbers.items() if isinstance(v, (int, float))}
        for tracker in self.trackers:
            tracker.finish(self.folder, numbers)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file; a line cut short by a crash is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _before_resume(record: dict[str, Any], resume_epoch: int, resume_step: int) -> bool:
    if record.get("kind") in ("step", "eval"):  # eval: an iteration run's evaluation
        return record.get("step", 0) <= resume_step
    return record.get("epoch", 0) <= resume_epoch


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value
