"""Atomic, durable file writes: the one way every file of the toolkit is written.

The content goes to a temporary file beside the target, is flushed to disk, then renamed over
the target, and the folder entry is flushed too: a crash at any moment leaves either the
previous file or the new one, never a half-written file under the final name. A write that
fails for a reason the user can fix (disk full, read-only or forbidden folder, a file where a
folder should be) raises one `TwinsError` line naming the file, the cause and the fix, and
says that the previous file is kept; the OS error stays attached as its cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twins.errors import TwinsError

# Temporary files are named `.<stem>.<random>.tmp<suffix>`: this pattern finds those a killed
# process left behind.
TEMPORARY_GLOB = ".*.tmp*"

_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some quota or write elsewhere",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
    errno.EISDIR: "a folder stands there: name a file",
    # /proc, /sys and some mounts take no new files: open() says "No such file or directory".
    errno.ENOENT: "that folder takes no new files: choose a folder you may write to",
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; on success it is flushed to
    disk and replaces `path`, on error it is removed."""
    target = Path(path)
    if target.is_dir():
        raise TwinsError(
            f"cannot write {target}: it is a folder; name the file to write (e.g. a file in it)"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _raise_fixable(target, error)
        raise
    # Keep the extension: some writers (torch.export.save, onnx) look at it.
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError):
            _raise_fixable(target, error)
        raise
    _fsync_folder(target.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically."""
    import torch

    # Through a Python file object: torch.save on a path opens it in C++ and reports a failure
    # as a RuntimeError, not as the OSError that says what the user can fix.
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.save(obj, file)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Temporary files of writes in `folder` that a killed process did not finish."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.glob(TEMPORARY_GLOB):
            with contextlib.suppress(OSError):
                path.unlink()


def _raise_fixable(target: Path, error: OSError) -> None:
    """A `TwinsError` for an OS error the user can fix; other errors are left to the caller."""
    fix = _FIXES.get(error.errno)
    if fix is not None:
        reason = error.strerror or type(error).__name__
        raise TwinsError(
            f"cannot write {target} ({reason}): {fix}; the previous file is kept"
        ) from error


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
