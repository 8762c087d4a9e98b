"""A Parquet image set (`twins.data.parquet.layout`) read as a map-style data set: any sample at
any time, behind the same sample interface as class folders and packed shards.

Samples are numbered file after file (sorted by name), row after row, and the files play the
part of shards: the training order takes them in blocks of `shuffle_block` files, and the row
groups of each block in windows of `GROUP_WINDOW` rows, shuffled within each window
(`twins.data.order.window_order`, through the sampler's `group_sizes`), so the epoch order,
per-sample seeds, broken-image counts and exact resume are those of a packed set, whatever the
number of processes and loader workers. Sample i is read from its row group (the `image`
column's bytes only), the least Parquet can read; each process keeps the row groups it read
last (up to `ROW_GROUP_CACHE_BYTES`: those of the windows it reads). A set behind a URL
is read through the node cache of whole files (`twins.data.packed.cache`), fetched ahead in the
epoch's file order.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from twins import storage
from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb, decoder_for
from twins.data.packed.cache import ShardCache, node_cache
from twins.data.packed.window import CacheWindow, FollowsWindow
from twins.data.parquet.layout import DATA, ParquetFileInfo, ParquetSet, read_layout

# Rows of the training order's windows (`twins.data.order.window_order`): the samples of a
# window come from its row groups only. `datasets` writes image sets in row groups of 100 rows:
# ten or so row groups, of some 10 MB each for ImageNet.
GROUP_WINDOW = 1024
# Row groups a process keeps read, in bytes: those of two windows, with room to spare.
ROW_GROUP_CACHE_BYTES = 512 << 20
# Parquet files a process keeps open at most (the least recently read are closed).
OPEN_FILES = 64


class ParquetDataset(CountedReads, FollowsWindow, Dataset):
    """Split `split` (its `files`) of the Parquet set at `url`: (image, class) samples, None
    for an image that cannot be decoded (or a row without image bytes). `seed`,
    `shuffle_block` and `shuffled` give the epoch's file order, which `cache` (needed for a
    URL) fetches ahead in."""

    def __init__(
        self,
        url: str,
        split: str,
        files: list[ParquetFileInfo],
        classes: list[str],
        transform: Any = None,
        *,
        decode: Callable[[bytes], tuple[Any, str]] = decode_rgb,
        cache: ShardCache | None = None,
        seed: int = 0,
        shuffle_block: int = 1,
        shuffled: bool = False,
    ) -> None:
        self.url, self.split, self.transform, self.decode = url, split, transform, decode
        self.shown = storage.display(url)
        self.root = f"{self.shown} ({split})"
        self.files = [info.name for info in files]
        self.file_bytes = [info.bytes for info in files]
        self.classes = list(classes)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        # The training order's blocks of files and windows of row groups (the sampler's).
        self.group_sizes = [list(info.row_groups) for info in files]
        self.shard_sizes = [sum(info.row_groups) for info in files]
        self.group_window = GROUP_WINDOW
        self.starts = np.cumsum([0, *self.shard_sizes]).tolist()
        self.group_starts = [np.cumsum([0, *info.row_groups]).tolist() for info in files]
        labels = [info.labels for info in files]
        self.targets = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        self.cache = cache
        self._window = (
            None if cache is None else CacheWindow(self.files, cache, seed, shuffle_block, shuffled)
        )
        self._guard = threading.Lock()
        self._forget()
        self.init_counts(len(self.targets))

    def _forget(self) -> None:
        """This process's open files and row groups: none (a new process reads its own)."""
        self._pid, self._open, self._groups, self._group_bytes = -1, OrderedDict(), OrderedDict(), 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=-1, _open=OrderedDict(), _groups=OrderedDict(), _group_bytes=0)
        state["_guard"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> ImageSample | None:
        number = bisect.bisect_right(self.starts, index) - 1
        row = index - self.starts[number]
        group = bisect.bisect_right(self.group_starts[number], row) - 1
        images = self._row_group(number, group)
        data = images.field("bytes")[row - self.group_starts[number][group]].as_py()
        return self.read_sample(index, int(self.targets[index]), lambda: self.decode(_bytes(data)))

    def sample_keys(self) -> list[str]:
        """Each row as `<file> row N`, stable wherever the set is (`twins.data.split`): the
        Hub's image paths repeat across classes."""
        return [
            f"{name} row {row}"
            for name, rows in zip(self.files, self.shard_sizes, strict=True)
            for row in range(rows)
        ]

    def file_name(self, index: int) -> str:
        number = bisect.bisect_right(self.starts, index) - 1
        row = index - self.starts[number]
        group = bisect.bisect_right(self.group_starts[number], row) - 1
        images = self._row_group(number, group, path=True)
        named = ""
        if images.type.get_field_index("path") >= 0:
            path = images.field("path")[row - self.group_starts[number][group]].as_py()
            named = f" ({path})" if path else ""
        return f"{storage.join(self.shown, DATA, self.files[number])} row {row}{named}"

    def _row_group(self, number: int, group: int, path: bool = False) -> Any:
        """The `image` column of row group `group` of file `number` (a StructArray), from this
        process's recent row groups or read; `path` adds the `path` field (for messages)."""
        with self._guard:
            if self._pid != os.getpid():
                self._close_all_but(set())
                self._forget()
                self._pid = os.getpid()
                if self._window is not None:
                    self._window.reset()
            if self._window is not None and (keep := self._window.enter(number)) is not None:
                self._close_all_but(keep)
            key = (number, group)
            if not path and key in self._groups:
                self._groups.move_to_end(key)
                return self._groups[key]
            file = self._file(number)
            columns = ["image"] if path else ["image.bytes"]
            images = file.read_row_group(group, columns=columns).column("image").combine_chunks()
            if path:
                return images
            self._groups[key] = images
            self._group_bytes += images.nbytes
            while self._group_bytes > ROW_GROUP_CACHE_BYTES and len(self._groups) > 1:
                self._group_bytes -= self._groups.popitem(last=False)[1].nbytes
            return images

    def _file(self, number: int) -> Any:
        import pyarrow.parquet as pq

        entry = self._open.get(number)
        if entry is not None:
            self._open.move_to_end(number)
            return entry[1]
        handle = open(self._path(number), "rb")  # noqa: SIM115 - kept open, closed when let go
        self._open[number] = (handle, pq.ParquetFile(handle))
        while len(self._open) > OPEN_FILES:
            self._open.popitem(last=False)[1][0].close()
        return self._open[number][1]

    def _close_all_but(self, keep: set[int]) -> None:
        for number in [n for n in self._open if n not in keep]:
            self._open.pop(number)[0].close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, the objects may be gone
            if self._pid == os.getpid():
                self._close_all_but(set())

    def _path(self, number: int) -> Path:
        name = self.files[number]
        if self.cache is None:
            if storage.is_remote(self.url):
                raise ValueError("a Parquet set behind a URL is read through a ShardCache")
            return Path(storage.local_path(storage.join(self.url, DATA, name)))
        return self.cache.path(name)  # downloaded first if need be, and held


def _bytes(data: bytes | None) -> bytes:
    if not data:
        raise ValueError("the row holds no image bytes")
    return data


def open_parquet(
    url: str,
    transforms: dict[str, Any],
    *,
    seed: int = 0,
    shuffle_block: int = 1,
    cache_dir: str | Path | None = None,
    cache_size: int = 0,
) -> dict[str, ParquetDataset]:
    """The splits of the Parquet set at `url` (`transforms`: split -> transform), checked;
    through a cache at `cache_dir` of at most `cache_size` bytes when `url` is remote. The
    training split is read in the file-block order of (seed, epoch)."""
    layout = read_layout(url, tuple(transforms))
    return {
        split: ParquetDataset(
            url,
            split,
            layout.splits[split],
            layout.classes,
            transform,
            decode=decoder_for(split),
            # One per split: each holds the files of its own window (the folder is shared).
            cache=_cache(layout, cache_dir, cache_size, shuffle_block),
            seed=seed,
            shuffle_block=shuffle_block,
            shuffled=split == "train",
        )
        for split, transform in transforms.items()
    }


def _cache(
    layout: ParquetSet, folder: str | Path | None, limit: int, block: int
) -> ShardCache | None:
    if not storage.is_remote(layout.url):
        return None  # read in place
    files = [info for infos in layout.splits.values() for info in infos]
    listing = json.dumps(sorted((i.name, i.bytes) for i in files)).encode()
    return node_cache(
        layout.url,
        {info.name: (info.bytes, None) for info in files},
        identity=listing,
        folder=folder,
        limit=limit,
        block=block,
        repack="download the file again",
        under=DATA,
        unit="files",
    )
