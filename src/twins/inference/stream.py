"""`twins predict --out`: any task's rows streamed into a file, resumable, shared among
torchrun's processes.

The driver is task-blind: a predictor gives `columns`, `plan(names)` (where its files go, for
all the images at once, so that each process places them alike) and `rows(items)` (one row
per image, in order; an image that cannot be read is a row with an error, never a stop). A
rerun on the same file skips the images it already holds (`rows.done_images`), so it ends
with the rows an unbroken run writes. Under torchrun, process r of n predicts the images
r, r + n, ... of the sorted list, into its own part; when all are done (a gloo barrier, which
waits as long as the slowest process needs), the first process joins the parts into the file.
A progress bar shows on a terminal (stderr) only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from twins.inference import rows as row_files
from twins.inference.owner import claim

# How long a process waits at a barrier for the others (the slowest may take hours).
BARRIER_TIMEOUT = timedelta(days=7)


class RowPredictor(Protocol):
    columns: Sequence[str]

    def plan(self, names: Sequence[str]) -> None: ...

    def rows(self, items: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]: ...


@dataclass
class StreamResult:
    out: Path
    images: int = 0  # rows in the file at the end (every process's)
    written: int = 0  # rows this run added (every process's)
    skipped: int = 0  # images the file already held
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, error), in the file

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "images": self.images,
            "written": self.written,
            "skipped": self.skipped,
            "failed": len(self.failures),
            "failures": [{"image": image, "error": error} for image, error in self.failures],
        }

    def format(self) -> str:
        lines = [
            f"{self.out}: {self.images} images ({self.written} predicted now, {self.skipped} "
            f"already there), {len(self.failures)} could not be read"
        ]
        lines += [f"  {image}: {error}" for image, error in self.failures[:10]]
        if len(self.failures) > 10:
            lines.append(f"  ... and {len(self.failures) - 10} more (rows with an error)")
        return "\n".join(lines)


def rank_and_world() -> tuple[int, int]:
    """This process's place among torchrun's (0 of 1 without torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier(world_size: int) -> None:
    """Wait for every process (a gloo group of its own: NCCL's would time out in minutes)."""
    if world_size == 1:
        return
    import torch.distributed as dist

    global _GROUP
    if _GROUP is None:
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        _GROUP = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    dist.barrier(group=_GROUP)


_GROUP: Any = None


def _progress(items: list, total: int) -> Iterable:
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, unit="image", file=sys.stderr, dynamic_ncols=True)


def stream(
    predictor: RowPredictor,
    items: Sequence[Any],
    out: str | os.PathLike,
    *,
    model: dict[str, Any],
    overwrite: bool = False,
) -> StreamResult:
    """Rows of `items` (each with `.name` and `.read`) by `predictor` into `out` (see the
    module's notes); `model` describes the model and options, recorded beside the file."""
    out = row_files.check_out(out)
    rank, world_size = rank_and_world()
    columns = row_files.columns_of(predictor.columns)
    items = sorted(items, key=lambda item: item.name)
    predictor.plan([item.name for item in items])
    if rank == 0:
        claim(out, model, columns, overwrite)
    _barrier(world_size)  # the file is claimed (or emptied) before anyone reads it
    done = row_files.done_images(out)
    share = [item for item in items[rank::world_size] if item.name not in done]
    held = sum(item.name in done for item in items)
    result = StreamResult(out, skipped=held)
    writer = row_files.open_rows(out, columns, rank, world_size)
    try:
        pairs = ((item.name, item.read) for item in share)
        for row in _progress(predictor.rows(pairs), len(share)):
            writer.write(row)
    finally:
        writer.close()
    _barrier(world_size)  # every part is complete
    if rank == 0:  # parts of this run, or of an earlier one that stopped before joining them
        row_files.merge(out, columns)
        final = row_files.read_rows(out)
        result.images = len(final)
        result.written = len(final) - held
        result.failures = [(str(r["image"]), str(r["error"])) for r in final if r.get("error")]
    return result
