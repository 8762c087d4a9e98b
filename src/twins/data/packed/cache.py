"""A node's local cache of whole shards of packed data sets (and whole files of Parquet sets)
read from object storage.

Shards are downloaded whole into `folder/shards/<data set>/` (the data set named by a hash of its URL
and manifest), to a temporary name, checked against the manifest's sha256, then renamed: a
partial or altered file is never read. A run checks the sha256 of a shard it finds cached the
first time it uses it, and fetches a copy damaged in the cache again. Every process of a node
(ranks × loader workers) may share the folder: a lock file per shard (`fcntl.flock`) makes one
process download it while the others wait, and a process holds a shared lock on each shard it
is reading or about to read. A Parquet set has no manifest of hashes: its files are checked by
their size only.
The cache keeps the total size of its shards under `limit` bytes by removing the least recently
used ones (by modification time, renewed at each use) that no process holds.

The reading process knows the epoch's order of shards (`twins.data.order`): when it starts on a
shard, a background thread fetches the shards that follow, up to the end of the next block, so
that they are there before they are needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from twins import storage
from twins.data.packed.format import file_sha256
from twins.errors import TwinsError
from twins.sizes import format_size

logger = logging.getLogger(__name__)

_LOCK_SUFFIX = ".lock"
_CHECKED_SUFFIX = ".checked"


def node_cache(
    url: str,
    expected: Mapping[str, tuple[int, str | None]],
    *,
    identity: bytes,
    folder: str | Path | None,
    limit: int,
    block: int,
    repack: str,
    under: str = "",
    unit: str = "shards",
) -> ShardCache:
    """The cache of the files `expected` (name -> bytes, sha256) at `url` (in its folder
    `under`), checked at start: `limit` must hold the 2 × `block` largest files being read and
    fetched, and `folder` (default `storage.cache_dir()`) must be writable. `identity` (a
    manifest, a listing) names the data set's folder in the cache together with the URL;
    `unit` is what messages call the files."""
    largest = max((size for size, _ in expected.values()), default=0)
    needed = 2 * block * largest
    if limit < needed:
        raise TwinsError(
            f"cache_size {format_size(limit)} cannot hold the 2 × shuffle_block ({block}) "
            f"{unit} of up to {format_size(largest)} being read and fetched: raise cache_size "
            f"to at least {format_size(needed, round_up=True)} or lower shuffle_block",
            argument="cache_size",
        )
    name = hashlib.sha256(url.encode() + b"\0" + identity).hexdigest()[:16]
    folder = _writable_cache_dir(Path(folder or storage.cache_dir()).expanduser(), url, unit)

    def download(file: str, path: Path) -> None:
        storage.get_file(storage.join(url, under, file) if under else storage.join(url, file), path)

    shown = storage.display(url)
    return ShardCache(folder, name, limit, download, dict(expected), source=shown, repack=repack)


def _writable_cache_dir(folder: Path, url: str, unit: str) -> Path:
    """`folder`, checked at start: a cache_dir the loader workers cannot write would stop the
    run at its first file."""
    try:
        (folder / "shards").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder / "shards", prefix=".write-check-"):
            pass
    except OSError as error:
        raise TwinsError(
            f"cache_dir {folder} cannot be written ({error.strerror or error}): the {unit} of "
            f"{storage.display(url)} are cached there; set cache_dir (or TWINS_CACHE_DIR) to a "
            "writable folder with room for cache_size",
            argument="cache_dir",
        ) from error
    return folder


class ShardCache:
    """Whole shards of one data set at `folder / name`, fetched with `download(name, path)`,
    within `limit` bytes for all data sets in `folder`."""

    def __init__(
        self,
        folder: str | Path,
        dataset: str,
        limit: int,
        download: Callable[[str, Path], None],
        expected: dict[str, tuple[int, str | None]],
        *,
        source: str = ".",
        repack: str = "twins pack",
    ) -> None:
        self.root = Path(folder).expanduser() / "shards"
        self.folder = self.root / dataset
        self.limit = limit
        self.download = download
        # shard name -> (bytes, sha256); a sha256 of None: checked by size only (a data set
        # without a manifest of hashes, such as a Parquet set)
        self.expected = expected
        self.source, self.repack = source, repack  # for messages: the data's URL, its pack
        # This run's mark on the shards it has checked (`_usable`); its forked or spawned
        # loader workers carry the same.
        self.session = os.urandom(8).hex()
        self._pid = -1
        self._held: dict[str, int] = {}  # shard name -> lock file descriptor (shared lock)
        # One thread of this process at a time takes a shard's file lock (see `_acquire`).
        self._taking: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._queue: queue.Queue[list[str]] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_pid=-1, _held={}, _taking={}, _guard=None, _queue=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()

    def path(self, name: str) -> Path:
        """The local file of shard `name`, downloaded first if need be; held (shared lock)
        until `release`."""
        self._this_process()
        with self._guard:
            held = name in self._held
        if not held:
            self._acquire(name)
        target = self.folder / name
        with contextlib.suppress(OSError):
            os.utime(target)  # recently used: evicted last
        return target

    def prefetch(self, names: list[str]) -> None:
        """Fetch `names` in the background (in this process's thread), holding them."""
        self._this_process()
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(target=self._prefetch_loop, daemon=True).start()
        self._queue.put(list(names))

    def release_all_but(self, keep: set[str]) -> None:
        """Stop holding the shards not in `keep`: they may be evicted."""
        with self._guard:
            for name in [n for n in self._held if n not in keep]:
                fd = self._held.pop(name)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _this_process(self) -> None:
        # A forked loader worker shares its parent's lock descriptors: it forgets them (closing
        # its copies leaves the parent's locks) and takes its own.
        if self._pid != os.getpid():
            for fd in self._held.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pid, self._held, self._taking, self._queue = os.getpid(), {}, {}, None
            self._guard = threading.Lock()

    def _prefetch_loop(self) -> None:
        assert self._queue is not None
        while True:
            names = self._queue.get()
            for name in names:
                with self._guard:
                    held = name in self._held
                if not held:
                    try:
                        self._acquire(name)
                    except Exception as error:  # the reader fetches it again and reports
                        logger.warning("prefetching %s failed: %s", name, error)

    def _acquire(self, name: str) -> None:
        # flock locks belong to the open file description, not the thread: were the reader and
        # the prefetch thread both to go for the same missing shard, one would wait for its
        # exclusive lock while the other holds a shared one in the same process, for ever.
        # So the threads of a process take a shard's file lock one after the other.
        with self._guard:
            taking = self._taking.setdefault(name, threading.Lock())
        with taking:
            with self._guard:
                if name in self._held:  # the other thread got there first
                    return
            fd = self._lock_shared(name)
            with self._guard:
                self._held[name] = fd

    def _lock_shared(self, name: str) -> int:
        """A descriptor of shard `name`'s lock file holding a shared lock, the shard there."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / (name + _LOCK_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Never turn a shared lock into an exclusive one while holding it: two processes
            # doing so would wait for each other. An evictor may take a shard between the
            # exclusive and the shared lock: then round again.
            fcntl.flock(fd, fcntl.LOCK_SH)
            while not self._usable(name):
                fcntl.flock(fd, fcntl.LOCK_UN)
                fcntl.flock(fd, fcntl.LOCK_EX)  # one process downloads, the others wait
                if not self._usable(name):
                    self._fetch(name)
                fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _present(self, name: str) -> bool:
        try:
            return (self.folder / name).stat().st_size == self.expected[name][0]
        except OSError:
            return False

    def _usable(self, name: str) -> bool:
        """Whether shard `name` is there (False: to be downloaded), checked in this run. A
        cached file can be damaged in place (a disk, another tool), keeping its size, and then
        every later run would read garbled images: so the first process of a run to use a
        cached shard checks its sha256, fetches a damaged one again (a whole new file renamed
        over it) and marks the shard checked for the run (`{name}.checked` holds the marks of
        the last runs, or ranks, that checked it). The processes of a run take the mark's lock one at a time, never while waiting
        for another lock, so no other process has to let go of the shard first."""
        if not self._present(name):
            return False
        fd = os.open(self.folder / (name + _CHECKED_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.session in _marks(fd):
                return True
            sha256 = self.expected[name][1]
            if sha256 is not None and file_sha256(self.folder / name) != sha256:
                logger.warning(
                    "shard %s in the cache %s was damaged there (its sha256 is not the "
                    "manifest's; the data at %s is not at fault): fetching it again",
                    name,
                    self.folder,
                    self.source,
                )
                self._fetch(name, mark=False)
            _mark(fd, self.session, _marks(fd))
            return True
        finally:
            os.close(fd)  # and its lock

    def _fetch(self, name: str, mark: bool = True) -> None:
        """Download shard `name`, check it and rename it into place; marked checked for this
        run unless the caller holds the mark's lock and marks it."""
        size, sha256 = self.expected[name]
        for left in self.folder.glob(f".*{name}.*"):  # of a process killed while downloading
            left.unlink(missing_ok=True)
        reserved = self._make_room(name, size)
        partial = self.folder / f".{name}.{os.getpid()}.download"
        try:
            self.download(name, partial)
            if sha256 is not None and file_sha256(partial) != sha256:
                # A rerun of the pack keeps an object of the right size: it has to go first.
                raise TwinsError(
                    f"shard {name} of {self.source} as downloaded does not match its sha256 in "
                    "the manifest: it was altered or damaged there, or the manifest belongs to "
                    f"other shards; delete {storage.join(self.source, name)} and re-run "
                    f"`{self.repack}`"
                )
            os.replace(partial, self.folder / name)
            if mark:
                fd = os.open(self.folder / (name + _CHECKED_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    _mark(fd, self.session, [])  # checked as downloaded: older marks go
                finally:
                    os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
            reserved.unlink(missing_ok=True)

    def _make_room(self, name: str, size: int) -> Path:
        """Remove the least recently used shards no process holds until `size` more bytes fit,
        counting the downloads under way (their reservations), and reserve them; returns the
        reservation file. One process at a time, node-wide."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".room.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            total = sum(_reservations(self.root))
            stats = []
            for path in _cached_files(self.root):
                with contextlib.suppress(OSError):
                    info = path.stat()
                    stats.append((info.st_mtime_ns, info.st_size, path))
            total += sum(nbytes for _, nbytes, _ in stats)
            for _, nbytes, path in sorted(stats, key=lambda s: s[0]):
                if total + size <= self.limit:
                    break
                if path.parent == self.folder and path.name in self._held:
                    continue
                if _remove_unheld(path):
                    total -= nbytes
            if total + size > self.limit and self._first_time_over():
                logger.warning(
                    "shard cache %s holds %s in shards being read: over its cache_size of %s "
                    "(said once per run)",
                    self.root,
                    format_size(total + size),
                    format_size(self.limit),
                )
            reservation = self.folder / f".{name}.{os.getpid()}.{size}.reserved"
            reservation.touch()
            return reservation
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _first_time_over(self) -> bool:
        """Whether this run has not yet said that the cache is over its size (room lock held):
        every process of the run downloads, again each epoch, and would say it each time."""
        said = self.root / ".over-limit"
        try:
            runs = said.read_text().split()
        except FileNotFoundError:
            runs = []
        if self.session in runs:
            return False
        said.write_text("\n".join([*runs[-31:], self.session]) + "\n")  # the last runs only
        return True


def _cached_files(root: Path) -> list[Path]:
    """The whole files in the cache at `root`, of every data set (temporary files, locks and
    marks start with a dot or end in their suffix)."""
    return [*root.glob("*/*.tar"), *root.glob("*/*.parquet")]


def _reservations(root: Path) -> list[int]:
    """The bytes of the downloads under way on this node; those of dead processes removed."""
    sizes = []
    for path in root.glob("*/.*.reserved"):
        try:
            pid, size = (int(part) for part in path.name.split(".")[-3:-1])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)  # raises when the process is gone
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except PermissionError:  # alive, another user's
            pass
        sizes.append(size)
    return sizes


def _remove_unheld(path: Path) -> bool:
    """Remove shard `path` if no process holds it."""
    lock = path.with_name(path.name + _LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        path.unlink(missing_ok=True)
        return True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# Runs whose marks a shard keeps: the ranks of a run on one node (each its own mark) and the
# runs sharing the cache, each checking a shard once.
_MARKS_KEPT = 64


def _marks(fd: int) -> list[str]:
    """The marks of the runs that have checked a shard (its `.checked` file, lock held)."""
    return os.pread(fd, 17 * _MARKS_KEPT, 0).decode(errors="replace").split()


def _mark(fd: int, session: str, marks: list[str]) -> None:
    text = "\n".join([*marks[-(_MARKS_KEPT - 1) :], session]) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
