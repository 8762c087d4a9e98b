"""A validation part drawn from the training images (`val_split`), for data without one.

The draw is a pure function of the seed and the sorted sample keys (paths relative to the data
set, as `sample_keys()` gives them), so every machine, every rank and every later run (resume,
`twins eval`) holds out the same images, whatever order the files were listed in. The seed is
the run's `seed`, in its own stream, so the held-out images are not tied to the epoch order.

`DataPart` is one part of an image data set: the sample interface of the readers
(`twins.data.counted`: counts, broken files, health check; `set_epoch` and `shard_sizes` of a
packed set, so its shard-block order and cache still work), over a sorted subset of the indices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from twins.data.counted import ImageSample, judge_health
from twins.errors import TwinsError

# SeedSequence's second word: the split's own random stream of a seed.
_SPLIT_STREAM = 0x7A11D


def sample_keys(dataset: Any) -> list[str]:
    """The data set's sample keys: its `sample_keys()`, else the file of each sample."""
    keys = getattr(dataset, "sample_keys", None)
    if keys is not None:
        return list(keys())
    return [dataset.file_name(index) for index in range(len(dataset))]


def validation_indices(keys: Sequence[str], fraction: float, seed: int) -> list[int]:
    """The indices (ascending) of the `fraction` of samples held out for validation: a seeded
    permutation of the samples sorted by key (then by index, for repeated keys)."""
    count = len(keys)
    if count < 2:
        raise TwinsError(
            f"val_split needs at least 2 training images to hold some out, found {count}; "
            "add images or give the data a validation part",
            argument="val_split",
        )
    held_out = min(count - 1, max(1, round(fraction * count)))  # both parts keep an image
    by_key = sorted(range(count), key=lambda index: (keys[index], index))
    order = np.random.default_rng((_SPLIT_STREAM, seed)).permutation(count)
    return sorted(by_key[position] for position in order[:held_out].tolist())


class DataPart(Dataset):
    """The samples `indices` (ascending) of `source`, an image data set; `name` says which part
    (named with the source's root in messages)."""

    def __init__(self, source: Any, indices: Sequence[int], name: str) -> None:
        self.source = source
        self.indices = list(indices)
        self.root = f"{source.root} ({name})"
        self.classes = source.classes
        self.class_to_idx = getattr(source, "class_to_idx", None)
        targets = getattr(source, "targets", None)
        self.targets = None if targets is None else [targets[i] for i in self.indices]
        self.left_out: list[str] = []  # the source's, named once by its other part
        sizes = getattr(source, "shard_sizes", None)
        if sizes is not None:  # the sampler shuffles a packed set's shards in blocks
            starts = np.cumsum([0, *sizes])
            shards = np.searchsorted(starts, self.indices, side="right") - 1
            self.shard_sizes = np.bincount(shards, minlength=len(sizes)).tolist()

    @property
    def transform(self) -> Any:
        return self.source.transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> ImageSample | None:
        return self.source[self.indices[index]]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def file_name(self, index: int) -> str:
        return self.source.file_name(self.indices[index])

    # The source's counts are this part's: only its samples are read through it.
    @property
    def tried(self) -> int:
        return self.source.tried

    @property
    def converted(self) -> int:
        return self.source.converted

    @property
    def skipped(self) -> int:
        return self.source.skipped

    @property
    def broken_files(self) -> list[str]:
        return self.source.broken_files

    def check_health(self) -> None:
        judge_health(self.tried, self.skipped, len(self), self.root)

    def unreadable_classes(self) -> list[str]:
        return self.source.unreadable_classes(self.indices)


def split_off_validation(
    open_train: Callable[[str], Any], splits: Sequence[str], fraction: float, seed: int
) -> dict[str, DataPart]:
    """The parts `splits` ("train", "val") of the training images; `open_train(split)` opens
    them as that split reads them (its transform and decoder)."""
    parts: dict[str, DataPart] = {}
    held_out: list[int] | None = None
    for split in splits:
        source = open_train(split)
        if held_out is None:
            held_out = validation_indices(sample_keys(source), fraction, seed)
        if split == "train":
            kept = sorted(set(range(len(source))) - set(held_out))
            parts[split] = DataPart(source, kept, "train part")
            parts[split].left_out = list(getattr(source, "left_out", []))
        else:
            parts[split] = DataPart(
                source, held_out, f"val_split {fraction:g} of train, seed {seed}"
            )
    return parts


def relative_keys(paths: Sequence[str], root: str) -> list[str]:
    """`paths` relative to `root`, with forward slashes: keys that do not depend on where the
    data set is mounted."""
    return [os.path.relpath(path, root).replace(os.sep, "/") for path in paths]


def read_for_evaluation(source: Any, decode: Callable[[bytes], Any]) -> None:
    """Turn a data set opened as the training split into one read for evaluation: `decode` (the
    evaluation transform takes what it gives), and a packed set's shards in stored order."""
    source.decode = decode
    if getattr(source, "shuffled", False):
        source.shuffled = False
        source.set_epoch(0)
