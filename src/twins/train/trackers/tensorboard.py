"""TensorBoard event files in the run's `tensorboard/` folder (torch's SummaryWriter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twins.train.trackers.interface import TrackerStart, scalars, short


class TensorBoardTracker:
    name = "tensorboard"
    run_id = None  # the event files live in the output folder: it is the run

    def __init__(self, start: TrackerStart) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import; rank 0 only

        self.writer = SummaryWriter(
            # Events at steps after the checkpoint's are hidden; its own step's were kept.
            str(start.folder / "tensorboard"),
            purge_step=start.resume_step + 1 if start.resume_step else None,
        )

    def log(self, record: dict[str, Any]) -> bool:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        return True

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        """The event files keep the steps up to the checkpoint (`purge_step` hides the later)."""

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, folder: Path, final: dict[str, Any]) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def fresh_id() -> None:
    return None


def open_run(config: Any, start: TrackerStart) -> TensorBoardTracker:
    return TensorBoardTracker(start)


def unreachable(config: Any, start: TrackerStart, error: BaseException) -> str:
    return (
        f"warning: TensorBoard events cannot be written to {start.folder / 'tensorboard'} "
        f"({short(error)}): the run goes on without them, its metrics are in metrics.jsonl"
    )
