"""One run per output folder: an advisory lock on `<train_url>/.lock` held while a run trains.

A second run on a folder in use is refused with one line naming the holder (process, host,
start time). The lock is the operating system's (`flock`), so it goes with its holder: a crashed
or killed run leaves no stale lock behind. Under torchrun the main process holds it for the
group, and every process learns the outcome (a collective), so all stop together.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from twins.errors import TwinsError
from twins.train import distributed

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None

LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_output(folder: str | Path, device: torch.device) -> Iterator[None]:
    """Hold the lock of `folder` (created if missing) for the block; refuse if another run does.
    A block that fails before writing anything there (a bad data folder) leaves no folder
    holding only the lock: what the lock made is removed again."""
    folder = Path(folder)
    handle, holder = None, None
    made = [path for path in (folder / LOCK_NAME, folder, *folder.parents) if not path.exists()]
    if distributed.is_main_process():
        handle, holder = _acquire(folder)
    # Every process learns whether the main process got the lock.
    granted = distributed.all_gather_rows(torch.tensor([float(holder is None)], device=device))
    if not bool(granted[0, 0]):
        if handle is not None:
            os.close(handle)
        raise TwinsError(
            f"{folder} is in use by another run ({holder or 'its main process'}): wait for it to "
            "end, or give another output folder (train_url)",
            argument="train_url",
        )
    try:
        yield
    except BaseException:
        if handle is not None:
            _remove_if_only_the_lock(folder, made)
        raise
    finally:
        if handle is not None:
            os.close(handle)  # closing drops the lock


def _remove_if_only_the_lock(folder: Path, made: list[Path]) -> None:
    """Remove the lock file and the folders `made` for it, when the folder holds nothing else."""
    if folder / LOCK_NAME not in made or os.listdir(folder) != [LOCK_NAME]:
        return
    with contextlib.suppress(OSError):
        (folder / LOCK_NAME).unlink()
        for path in made[1:]:
            path.rmdir()  # deepest first; stops at the first folder that is not empty


def _acquire(folder: Path) -> tuple[int | None, str | None]:
    """(the open lock file, None) when this process now holds the lock, else (None, holder)."""
    if folder.exists() and not folder.is_dir():
        raise TwinsError(
            f"output folder {folder} is a file: give a folder (train_url)", argument="train_url"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise TwinsError(
            f"cannot write to output folder {folder} ({error.strerror}): choose a folder you may "
            "write to (train_url)",
            argument="train_url",
        ) from error
    if fcntl is None:
        return handle, None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _describe(os.read(handle, 4096))
        os.close(handle)
        return None, holder
    who = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
    os.ftruncate(handle, 0)
    os.write(handle, json.dumps(who).encode())
    return handle, None


def _describe(content: bytes) -> str:
    try:
        who = json.loads(content)
        return f"process {who['pid']} on {who['host']} since {who['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"
