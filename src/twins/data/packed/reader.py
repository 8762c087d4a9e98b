"""A packed data set (`twins pack`) read as a map-style data set: any sample at any time.

`ShardDataset(url, split)` reads the manifest and every shard's index at start (offsets, sizes
and classes, kept as arrays), checks them against each other and the shards, and then serves
`dataset[i]` by reading sample i's image bytes from its shard (one `os.pread` on a descriptor
each process keeps open per shard) and decoding them as an image file would be (`twins.data.images.decoder_for` the split): it returns what `SafeImageFolder` returns, with
the same counts, broken-file handling and health check (`twins.data.counted`), so the per-sample
seeds, the loader, Mixup and exact resume work unchanged. Samples are numbered shard after shard
in the manifest's order.

A local packed folder is read in place. A packed data set behind a URL (s3://, obs://, other
fsspec URLs) is read through a node-local cache of whole shards (`twins.data.packed.cache`),
fetched ahead in the epoch's shard order (`twins.data.order`).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from twins import storage
from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb, decoder_for
from twins.data.packed import format as packed
from twins.data.packed.cache import ShardCache, node_cache
from twins.data.packed.window import CacheWindow, FollowsWindow
from twins.errors import TwinsError

# Shard files a process keeps open at most (the least recently read are closed): the shards of
# two blocks of the order, at the default shuffle_block, with room to spare.
OPEN_SHARDS = 64


class ShardDataset(CountedReads, FollowsWindow, Dataset):
    """Split `split` of the packed data set at `url`: (image, class) samples, None for an image
    that cannot be decoded. `seed` and `shuffle_block` give the epoch's shard order (that of the
    training sampler), which a cache fetches ahead in; `cache` is needed for a URL."""

    def __init__(
        self,
        url: str,
        split: str,
        transform: Any = None,
        *,
        decode: Callable[[bytes], tuple[Any, str]] = decode_rgb,
        cache: ShardCache | None = None,
        seed: int = 0,
        shuffle_block: int = 1,
        shuffled: bool = False,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.url, self.split, self.transform, self.decode = url, split, transform, decode
        self.shown = storage.display(url)  # as printed: without any user:password@
        self.root = f"{self.shown} ({split})"
        manifest = manifest or packed.read_manifest(url)
        if split not in manifest["splits"]:
            raise TwinsError(f"{self.shown} holds no {split} split: re-run `twins pack`")
        self.classes = list(manifest["classes"])
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.shards = list(manifest["splits"][split]["shards"])
        self.shard_sizes = [shard["samples"] for shard in self.shards]
        self.starts = np.cumsum([0, *self.shard_sizes]).tolist()
        self.cache = cache
        self.indexed = bool(manifest.get("indexed"))  # shards someone else wrote
        # Packed from class folders (not indexed, nor from a Parquet set): each sample's class
        # is the folder it was packed from.
        self.class_folders = not self.indexed and manifest.get("source_format") != "parquet"
        self._fix = f"re-run `{repack_command(manifest, self.shown)}`"
        self.samples = manifest["splits"][split].get("samples")
        indexes = _read_indexes(url, self.shards, self._fix)
        self._check(indexes)
        self.offsets = np.concatenate([_column(i, 2) for i in indexes]).astype(np.int64)
        self.sizes = np.concatenate([_column(i, 3) for i in indexes]).astype(np.int64)
        self.targets = np.concatenate([_column(i, 4) for i in indexes]).astype(np.int64)
        names = [shard["name"] for shard in self.shards]
        self._window = (
            None if cache is None else CacheWindow(names, cache, seed, shuffle_block, shuffled)
        )
        self._pid, self._open, self._guard = -1, OrderedDict(), threading.Lock()
        self.init_counts(len(self.offsets))

    def __getstate__(self) -> dict[str, Any]:
        # Open descriptors belong to this process: a spawned worker opens its own.
        return {**self.__dict__, "_pid": -1, "_open": OrderedDict(), "_guard": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> ImageSample | None:
        shard = bisect.bisect_right(self.starts, index) - 1
        start, size = int(self.offsets[index]), int(self.sizes[index])
        data = self._read(shard, start, size)
        return self.read_sample(index, int(self.targets[index]), lambda: self.decode(data))

    def _read(self, shard: int, start: int, size: int) -> bytes:
        """`size` bytes at `start` of `shard`, through this process's open descriptor of it.
        `os.pread` moves no file offset that forked processes would share; still, a forked
        worker opens its own descriptors, after taking its own hold on the shards in the
        cache."""
        with self._guard:
            if self._pid != os.getpid():
                # The parent's descriptors stay open there; its place in the order is its own.
                self._pid, self._open = os.getpid(), OrderedDict()
                if self._window is not None:
                    self._window.reset()
            if self._window is not None and (keep := self._window.enter(shard)) is not None:
                self._close_all_but(keep)
            fd = self._open.get(shard)
            if fd is None:
                fd = os.open(self._shard_path(shard), os.O_RDONLY)
                self._open[shard] = fd
                while len(self._open) > OPEN_SHARDS:
                    os.close(self._open.popitem(last=False)[1])
            else:
                self._open.move_to_end(shard)
            return os.pread(fd, size, start)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, os may be gone already
            if self._pid == os.getpid():
                self._close_all_but(set())

    def _close_all_but(self, keep: set[int]) -> None:
        for shard in [s for s in self._open if s not in keep]:
            os.close(self._open.pop(shard))

    def file_name(self, index: int) -> str:
        shard = bisect.bisect_right(self.starts, index) - 1
        name = self.shards[shard]["name"]
        members = packed.read_json(storage.join(self.url, packed.index_name(name)))["members"]
        key, extension, *_, source = members[index - self.starts[shard]]
        if self.indexed:
            return f"{storage.join(self.shown, name)}:{key}{extension}"
        return f"{storage.join(self.shown, name)}:{key}{extension} (packed from {source})"

    def sample_keys(self) -> list[str]:
        """Each sample's image as it was packed (`cat/0001.jpg`, relative to the split's
        folder): the keys of the folder it was packed from (`twins.data.split`)."""
        indexes = _read_indexes(self.url, self.shards, self._fix)
        # An indexed set's members name no source: their key and extension then.
        return [m[-1] or m[0] + m[1] for index in indexes for m in index["members"]]

    def _shard_path(self, shard: int) -> Path:
        name = self.shards[shard]["name"]
        if self.cache is None:
            if storage.is_remote(self.url):
                raise ValueError("a packed data set behind a URL is read through a ShardCache")
            return packed.local_path(storage.join(self.url, name))
        return self.cache.path(name)  # downloaded first if need be, and held

    def _check(self, indexes: list[dict[str, Any]]) -> None:
        """Each index agrees with the manifest (and its classes with the class folders its
        images were packed from); local shards are there with their size."""
        if self.samples != sum(self.shard_sizes):
            raise TwinsError(
                f"the manifest of {self.shown} counts {self.samples} {self.split} samples, its "
                f"shards {sum(self.shard_sizes)}: it was edited or is incomplete; {self._fix}"
            )
        for shard, index in zip(self.shards, indexes, strict=True):
            name = shard["name"]
            agrees = (
                index.get("sha256") == shard["sha256"]
                and index.get("bytes") == shard["bytes"]
                and len(index.get("members", ())) == shard["samples"]
            )
            if not agrees:
                raise TwinsError(
                    f"the index of shard {name} in {self.shown} does not match the manifest: the "
                    f"pack is incomplete or mixed with another; {self._fix}"
                )
            last = index["members"][-1] if index["members"] else None
            if last is not None and last[2] + last[3] > shard["bytes"]:
                raise TwinsError(f"the index of shard {name} points past its end; {self._fix}")
            for key, _, _, _, target, source in index["members"]:
                if not self.class_folders:  # the class is the label's, checked when packed
                    folder = self.classes[target] if 0 <= target < len(self.classes) else None
                else:
                    folder = source.split("/", 1)[0]
                if not 0 <= target < len(self.classes) or self.classes[target] != folder:
                    raise TwinsError(
                        f"{key} of shard {name} in {self.shown} has class {target}, but was "
                        f"packed from {source} (class {folder!r}): the index or the manifest's "
                        f"classes were edited; {self._fix}"
                    )
        if storage.is_remote(self.url):
            sizes = in_threads(
                lambda s: _size_or_none(storage.join(self.url, s["name"])), self.shards
            )
        else:
            sizes = [_size_or_none(storage.join(self.url, s["name"])) for s in self.shards]
        for shard, found in zip(self.shards, sizes, strict=True):
            if found is None:
                raise TwinsError(f"shard {shard['name']} of {self.shown} is missing; {self._fix}")
            if found != shard["bytes"]:
                raise TwinsError(
                    f"shard {shard['name']} of {self.shown} has {found} bytes, the manifest says "
                    f"{shard['bytes']}: it is truncated or altered; {self._fix}"
                )


def open_packed(
    url: str,
    transforms: dict[str, Any],
    *,
    seed: int = 0,
    shuffle_block: int = 1,
    cache_dir: str | Path | None = None,
    cache_size: int = 0,
) -> dict[str, ShardDataset]:
    """The splits of the packed data set at `url` (`transforms`: split -> transform); through
    a cache at `cache_dir` of at most `cache_size` bytes when `url` is remote. The training
    split is read in the shard-block order of (seed, epoch)."""
    manifest = packed.read_manifest(url)
    remote = storage.is_remote(url)
    return {
        split: ShardDataset(
            url,
            split,
            transform,
            decode=decoder_for(split),
            # One per split: each holds the shards of its own window (the folder is shared).
            cache=_cache(url, manifest, cache_dir, cache_size, shuffle_block) if remote else None,
            seed=seed,
            shuffle_block=shuffle_block,
            shuffled=split == "train",
            manifest=manifest,
        )
        for split, transform in transforms.items()
    }


def _cache(
    url: str, manifest: dict[str, Any], folder: str | Path | None, limit: int, block: int
) -> ShardCache:
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    shown = storage.display(url)
    return node_cache(
        url,
        {s["name"]: (s["bytes"], s["sha256"]) for s in shards},
        identity=storage.read_bytes(storage.join(url, packed.MANIFEST)),
        folder=folder,
        limit=limit,
        block=block,
        repack=repack_command(manifest, shown),
    )


def verify_packed(url: str) -> int:
    """Check every shard of the packed data set at `url` against the manifest's sha256 and its
    index against the shard's tar members (a remote shard is downloaded to a temporary
    folder); returns the number of shards."""
    if storage.is_remote(url):
        storage.check_access(url)  # within seconds, the specific line for the store's problem
    manifest = packed.read_manifest(url)
    shown = storage.display(url)
    repack = f"`{repack_command(manifest, shown)}`"
    count = 0
    for split in manifest["splits"]:
        ShardDataset(url, split, manifest=manifest)  # indexes, their hashes, sizes, classes
        for shard in manifest["splits"][split]["shards"]:
            name, location = shard["name"], storage.join(url, shard["name"])
            index = packed.read_json(storage.join(url, packed.index_name(name)))
            with tempfile.TemporaryDirectory(prefix="twins-verify-") as folder:
                if storage.is_remote(url):
                    path = Path(folder) / name
                    storage.get_file(location, path)
                    # A rerun of the pack keeps an object of the right size: it has to go.
                    fix = f"delete {storage.join(shown, name)} and re-run {repack}"
                else:
                    path, fix = packed.local_path(location), f"re-run {repack}"
                if packed.file_sha256(path) != shard["sha256"]:
                    raise TwinsError(
                        f"shard {name} of {shown} does not match its sha256 in the manifest: "
                        f"it was altered or damaged; {fix}"
                    )
                _check_members(
                    path,
                    index["members"],
                    f"shard {name} of {shown}",
                    repack,
                    manifest["classes"] if manifest.get("indexed") else None,
                )
            count += 1
    return count


def _check_members(
    path: Path,
    members: list[list[Any]],
    shown: str,
    repack: str,
    classes: list[str] | None = None,
) -> None:
    """The tar at `path` holds the members its index lists: each image where the index says,
    and each class member saying the index's class; exactly those for a shard `twins pack`
    wrote. `classes`: those of an indexed set, whose label members (the last column) may give
    a class by name, and whose tars may hold other members."""
    import tarfile

    with tarfile.open(path) as tar:
        found = {info.name: info for info in tar}
        expected = set()
        for key, extension, offset, size, target, source in members:
            label_name = source if classes is not None else key + ".cls"
            image, label = found.get(key + extension), found.get(label_name)
            expected.update({key + extension, label_name})
            if image is None or label is None or (image.offset_data, image.size) != (offset, size):
                raise TwinsError(
                    f"the index of {shown} does not match the tar's members at {key}: the index "
                    f"was edited or belongs to another shard; re-run {repack}"
                )
            stored = tar.extractfile(label).read()  # type: ignore[union-attr]
            says = {str(target).encode()}
            if classes is not None:
                stored = stored.strip()
                says.add(classes[target].encode())
            if stored not in says:
                raise TwinsError(
                    f"the index of {shown} gives {key} class {target}, the tar's {key}.cls "
                    f"says {stored.decode(errors='replace')}: the index was edited; re-run "
                    f"{repack}"
                )
        if classes is None and set(found) != expected:
            extra = sorted(set(found) - expected)[0]
            raise TwinsError(
                f"{shown} holds {extra}, which its index does not list: re-run {repack}"
            )


def repack_command(manifest: dict[str, Any], shown: str) -> str:
    """The command that writes the packed set at `shown` (whose manifest is `manifest`) anew."""
    if manifest.get("indexed"):
        return f"twins pack --index-only {shown}"
    return f"twins pack {manifest.get('source', 'SRC')} {shown}"


def _read_indexes(url: str, shards: list[dict[str, Any]], fix: str) -> list[dict[str, Any]]:
    def read(shard: dict[str, Any]) -> dict[str, Any]:
        location = storage.join(url, shard.get("index") or packed.index_name(shard["name"]))
        try:
            text = storage.read_bytes(location)
            recorded = shard.get("index_sha256")  # None: packed before it was recorded
            if recorded is not None and hashlib.sha256(text).hexdigest() != recorded:
                raise TwinsError(
                    f"the index {storage.display(location)} of shard {shard['name']} does not "
                    f"match its sha256 in the manifest: it was edited or belongs to another "
                    f"pack; {fix}"
                )
            return json.loads(text)
        except FileNotFoundError as error:
            raise TwinsError(
                f"the index {location} of shard {shard['name']} is missing; {fix}"
            ) from error
        except TwinsError:  # storage's line (credentials, bucket, endpoint): a ValueError too
            raise
        except ValueError as error:
            raise TwinsError(f"the index {location} is not JSON; {fix}") from error

    return in_threads(read, shards) if storage.is_remote(url) else [read(s) for s in shards]


def in_threads(function: Any, items: list[Any]) -> list[Any]:
    """`function` over `items` in 16 threads (calls to a store wait on the network)."""
    with ThreadPoolExecutor(16) as pool:
        try:
            return list(pool.map(function, items))
        except BaseException:
            # Ctrl-C, or one call's error: the others' retries would hold the pool's end (and
            # the process) for the whole retry budget.
            storage.interrupt_waits()
            raise


def _size_or_none(location: str) -> int | None:
    try:
        return storage.size(location)
    except FileNotFoundError:
        return None


def _column(index: dict[str, Any], column: int) -> np.ndarray:
    return np.array([member[column] for member in index["members"]], dtype=np.int64)
