"""Where a run stands: everything a checkpoint keeps besides weights, optimizer and random
states (`twins.train.resume` writes and reads it).

`TrainState` is one process's view; `EpochProgress` is how far the process has got through an
epoch, kept in a checkpoint taken within it, so that the epoch goes on exactly as if it had not
stopped. Counts and sums are kept as float64 rows for the collectives that gather them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch


@dataclass
class EpochProgress:
    batches: int = 0  # batches of the epoch this process has trained on
    steps: int = 0  # optimizer steps applied
    skipped: int = 0  # optimizer steps skipped for non-finite gradients
    images: int = 0
    # Sums of the applied steps' losses, all and since the last logged step; during an epoch
    # they are tensors on the training device (read only when logged or saved).
    loss_sum: float | torch.Tensor = 0.0
    window_sum: float | torch.Tensor = 0.0
    window_steps: int = 0

    def to_row(self) -> torch.Tensor:
        """The fields as one float64 row (exact for these counts and sums)."""
        return torch.tensor(
            [float(getattr(self, f.name)) for f in fields(self)], dtype=torch.float64
        )

    @classmethod
    def from_row(cls, row: torch.Tensor) -> EpochProgress:
        values = row.tolist()
        return cls(
            **{
                f.name: value if isinstance(f.default, float) else int(value)
                for f, value in zip(fields(cls), values, strict=True)
            }
        )


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (applied or skipped) since the run began
    best_score: float = -math.inf  # the best val score (the task's: top-1, mIoU, box AP)
    best_weights: str = "raw"  # which weights scored best_score (and best.pt holds): raw or ema
    nonfinite_run: int = 0  # the latest optimizer steps in a row skipped as non-finite
    # Images left out as unreadable and converted to RGB since the run began, as of the latest
    # checkpoint (counted from the batches the loaders handed out).
    data_counts: dict[str, int] = field(default_factory=dict)
    progress: EpochProgress = field(default_factory=EpochProgress)  # of the current epoch
    # Each tracker's run (`loggers`: mlflow, wandb), which a resumed run goes on with.
    trackers: dict[str, str] = field(default_factory=dict)
