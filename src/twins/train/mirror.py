"""A run's output folder in an object store (`train_url: s3://bucket/prefix`, as the seed's
`train_url` on ModelArts).

The run writes into a local staging folder exactly as into a local output folder (lock, atomic
writes, metrics, TensorBoard), and `OutputMirror` copies it to the URL: after every checkpoint,
at every epoch's end, when the run stops and when it ends. Files go up when they changed since
the last upload, `checkpoints/last.pt` after all the others, and the pointer
`checkpoints/LATEST` (the step and epoch of that last.pt) after it: whoever reads the pointer
finds every file it speaks of complete, and metrics and best.pt at least as far as last.pt.
A failed upload keeps the local files, warns once and is tried again at the next sync.

At start, the newer of the staging folder and the bucket wins: a run started on another machine
copies the bucket's files down; one restarted where it was killed uploads what the kill kept
from going up. The staging folder is `<TWINS_CACHE_DIR or ~/.cache/twins>/outputs/<hash of
the URL and endpoint>`, printed at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from twins import storage
from twins.atomic import write_text
from twins.console import debug
from twins.errors import TwinsError
from twins.train.lock import LOCK_NAME
from twins.weights.torch_pth import load_torch_object

LAST = "checkpoints/last.pt"
POINTER = "checkpoints/LATEST"
# What went up, and when: (size, modification time) of each file as uploaded.
MANIFEST = ".uploaded.json"


def staging_folder(url: str) -> Path:
    """The local folder a run with output `url` writes into before uploading."""
    key = f"{url.rstrip('/')}\n{storage.endpoint()}"
    return storage.cache_dir() / "outputs" / hashlib.sha256(key.encode()).hexdigest()[:16]


class OutputMirror:
    """The output of one run: `local` is the folder the run writes; for a URL, `sync()` uploads
    it there. For a local output folder every method does nothing."""

    def __init__(self, url: str, say: Callable[[str], None] = print) -> None:
        self.remote = storage.is_remote(url)
        self.url = url.rstrip("/") if self.remote else url
        self.local = staging_folder(url) if self.remote else Path(url)
        self.say = say
        self._failing = False

    def shown(self, path: str | Path) -> str:
        """How to name a file of the run: its URL for a remote output."""
        path = Path(path)
        if not self.remote or not path.is_relative_to(self.local):
            return str(path)
        relative = path.relative_to(self.local).as_posix()
        shown = storage.display(self.url)
        return shown if relative == "." else storage.join(shown, relative)

    def pull(self) -> None:
        """At start, before the run looks at its folder: check that the URL can be written,
        then make the staging folder hold the newer of itself and the bucket."""
        if not self.remote:
            return
        storage.check_access(self.url, write=True)
        self.local.mkdir(parents=True, exist_ok=True)
        self.say(f"output {storage.display(self.url)}, staged in {self.local}")
        local = _position(self.local / LAST)
        pointer = self._read_pointer()
        remote_last = pointer is not None or storage.exists(storage.join(self.url, LAST))
        if not remote_last:
            if self._load_manifest():  # uploaded before, gone from the bucket now: cleared
                self.say(f"{storage.display(self.url)} is empty: the run starts afresh")
                self._clear()
            return
        if local is not None and pointer is None:
            # Killed between last.pt and its pointer: compare the checkpoints themselves.
            # Named as a temporary: one a kill leaves behind is removed, never uploaded.
            remote = self.local / "checkpoints" / ".last-in-bucket.tmp.pt"
            storage.get_file(storage.join(self.url, LAST), remote)
            newer = (_position(remote) or (-1, -1)) > local
            remote.unlink()
        else:
            newer = local is None or (pointer["global_step"], pointer["epoch"]) > local
        if newer:
            self._download()

    def sync(self) -> bool:
        """Upload what changed; True when everything is up. A failure is said once (until an
        upload succeeds again) and leaves the files for the next sync."""
        if not self.remote:
            return True
        try:
            self._upload()
        except (TwinsError, OSError) as error:
            if not self._failing:
                self.say(
                    f"warning: uploading to {storage.display(self.url)} failed ({error}); the "
                    f"files stay in {self.local} and go up at the next checkpoint"
                )
            self._failing = True
            return False
        if self._failing:
            self.say(f"uploading to {storage.display(self.url)} works again: all files are up")
        self._failing = False
        return True

    def finish(self) -> None:
        """The last sync of a finished run: a failure is an error (the files are kept)."""
        if not self.sync():
            raise TwinsError(
                f"the run finished but its files could not all be uploaded to "
                f"{storage.display(self.url)}: they are in {self.local}; start the same "
                "command again to upload them",
                argument="train_url",
            )

    def _upload(self) -> None:
        uploaded = self._load_manifest()
        present = self._local_files()
        changed = [name for name, stamp in present.items() if uploaded.get(name) != stamp]
        try:
            for name in sorted(changed, key=lambda name: name == LAST):  # last.pt last
                storage.put_file(self.local / name, storage.join(self.url, name))
                if name == LAST:
                    self._write_pointer()
                uploaded[name] = present[name]
            for name in sorted(set(uploaded) - set(present)):  # pruned epoch files
                storage.remove(storage.join(self.url, name))
                del uploaded[name]
            debug(f"uploaded {len(changed)} changed files to {storage.display(self.url)}")
        finally:
            write_text(self.local / MANIFEST, json.dumps(uploaded, sort_keys=True))

    def _download(self) -> None:
        """The bucket's files into the staging folder, last.pt last, replacing what is there."""
        names = [n for n in storage.list_files(self.url) if n not in (POINTER, MANIFEST)]
        names.sort(key=lambda name: name == LAST)
        self._clear()
        for name in names:
            storage.get_file(storage.join(self.url, name), self.local / name)
        present = self._local_files()
        write_text(self.local / MANIFEST, json.dumps(present, sort_keys=True))
        self.say(f"copied the run from {storage.display(self.url)}")

    def _clear(self) -> None:
        for name in [*self._local_files(), MANIFEST]:
            with contextlib.suppress(FileNotFoundError):
                (self.local / name).unlink()

    def _local_files(self) -> dict[str, list[int]]:
        """The run's files in the staging folder (not the lock, the manifest or temporaries),
        with their size and modification time."""
        files = {}
        for name in storage.list_files(self.local):
            base = name.rsplit("/", 1)[-1]
            if name in (LOCK_NAME, MANIFEST) or (base.startswith(".") and ".tmp" in base):
                continue
            stat = (self.local / name).stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
        return files

    def _load_manifest(self) -> dict[str, list[int]]:
        try:
            return json.loads((self.local / MANIFEST).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def _read_pointer(self) -> dict | None:
        try:
            return json.loads(storage.read_bytes(storage.join(self.url, POINTER)))
        except FileNotFoundError:
            return None

    def _write_pointer(self) -> None:
        step, epoch = _position(self.local / LAST) or (0, 0)
        pointer = {"file": "last.pt", "global_step": step, "epoch": epoch}
        storage.write_bytes(storage.join(self.url, POINTER), json.dumps(pointer).encode())


def _position(path: Path) -> tuple[int, int] | None:
    """(global step, epochs done) of a checkpoint: how far the run it holds had come."""
    if not path.is_file():
        return None
    try:
        saved = load_torch_object(path, mmap=True)
        return int(saved["global_step"]), int(saved["epoch"])
    except Exception:  # unreadable: as if absent, the run's own checks will say more
        return None
