"""What every image data set of the toolkit shares: reading one image without stopping on a
broken file, and the counts of what was read.

A data set that mixes in `CountedReads` returns, for each index, an `ImageSample` (the image
converted to RGB, its class, and whether it was stored in another mode) or None for a file it
cannot decode. Counts of images tried, converted and skipped (every read counts, each epoch
again) are kept in shared memory, so they include the loader's worker processes: read
`dataset.tried`, `dataset.converted`, `dataset.skipped`; `dataset.broken_files` lists the
unreadable files found so far, each once (a warning names each the first time).
`check_health()` stops the run when most files read so far were broken; `judge_health` is that
judgement on given counts, for counts summed over several processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import get_worker_info

from twins.errors import TwinsError

logger = logging.getLogger(__name__)

# One counter column per process: column 0 is the main process, column 1 + i is loader worker i.
# One writer per column, so no lock is needed; workers beyond the last column share it.
_COUNTER_COLUMNS = 65
_TRIED, _CONVERTED, _SKIPPED = range(3)

# `check_health` judges only after this many reads (or the whole set, when smaller).
MIN_READS_BEFORE_JUDGING = 256


class ImageSample(tuple):
    """(image, target), which also says whether the file was stored in another mode than RGB:
    the loader counts the conversions of the batches it hands out, not of those its workers
    read ahead, so the counts a checkpoint keeps are exact."""

    def __new__(cls, image: Any, target: int, converted: bool) -> ImageSample:
        sample = super().__new__(cls, (image, target))
        sample.converted = converted
        return sample

    def __reduce__(self) -> tuple:
        return ImageSample, (self[0], self[1], self.converted)


class CountedReads:
    """Counted, broken-file-proof reads for a data set of `size` images (a mix-in).

    The data set calls `init_counts(size)` once and `read_sample(...)` in `__getitem__`, and
    defines `root` (named in the health check) and `file_name(index)` (named in warnings)."""

    root: Any
    transform: Any

    def init_counts(self, size: int) -> None:
        self._counts = torch.zeros(3, _COUNTER_COLUMNS, dtype=torch.int64).share_memory_()
        # One flag per file, shared too: each broken file is named once per run, not per epoch.
        self._broken = torch.zeros(size, dtype=torch.bool).share_memory_()

    def file_name(self, index: int) -> str:
        raise NotImplementedError

    def read_sample(
        self, index: int, target: int, decode: Callable[[], tuple[Image.Image, str]]
    ) -> ImageSample | None:
        """`decode()` (upright RGB image, stored mode) counted, transformed and returned as the
        sample of `index`; None, counted and named once, when it raises."""
        column = _counter_column()
        self._counts[_TRIED, column] += 1
        try:
            image, stored_mode = decode()
        except Exception as error:  # any decoder failure: corrupt, truncated, empty, not an image
            self._counts[_SKIPPED, column] += 1
            if not self._broken[index]:
                self._broken[index] = True
                logger.warning("skipping unreadable image %s (%s)", self.file_name(index), error)
            return None
        converted = stored_mode != "RGB"
        if converted:
            self._counts[_CONVERTED, column] += 1
        if self.transform is not None:
            image = self.transform(image)
        return ImageSample(image, target, converted)

    @property
    def tried(self) -> int:
        """Images read so far (every epoch counts again), in all processes."""
        return int(self._counts[_TRIED].sum())

    @property
    def converted(self) -> int:
        """Images read so far that were stored in another mode than RGB and converted."""
        return int(self._counts[_CONVERTED].sum())

    @property
    def skipped(self) -> int:
        """Images read so far that could not be decoded and were left out."""
        return int(self._counts[_SKIPPED].sum())

    @property
    def broken_files(self) -> list[str]:
        """Files found unreadable so far, each once."""
        return [self.file_name(i) for i in self._broken.nonzero().flatten().tolist()]

    def check_health(self) -> None:
        """Raise TwinsError when most of the images read so far were unreadable."""
        judge_health(self.tried, self.skipped, len(self), self.root)

    def unreadable_classes(self, indices: Sequence[int] | None = None) -> list[str]:
        """The classes every image of which was found unreadable (once all were read, e.g.
        after an epoch): a model trained on the data set has a class it never sees. Empty for
        a data set without one class per image (`targets`). `indices`: of these samples only
        (a part of the data set, `twins.data.split`)."""
        targets, classes = getattr(self, "targets", None), getattr(self, "classes", None)
        if targets is None or not classes:
            return []
        targets, flags = torch.as_tensor(targets, dtype=torch.int64), self._broken
        if indices is not None:
            chosen = torch.as_tensor(indices, dtype=torch.int64)
            targets, flags = targets[chosen], flags[chosen]
        images = torch.bincount(targets, minlength=len(classes)).tolist()
        broken = torch.bincount(targets[flags], minlength=len(classes)).tolist()
        return [c for c, n, b in zip(classes, images, broken, strict=True) if n and b == n]


def judge_health(tried: int, skipped: int, size: int, root: str | Path) -> None:
    """Raise TwinsError when more than half of `tried` reads of the data set at `root` (`size`
    files) were unreadable, once `tried` reaches MIN_READS_BEFORE_JUDGING (or `size`, if fewer)."""
    if tried >= min(size, MIN_READS_BEFORE_JUDGING) and 2 * skipped > tried:
        raise TwinsError(
            f"{skipped} of {tried} images read from {root} could not be decoded; "
            "repair or remove the broken files (the warnings above name them)"
        )


def _counter_column() -> int:
    worker = get_worker_info()
    return 0 if worker is None else 1 + worker.id % (_COUNTER_COLUMNS - 1)
