"""Atomic writes: the previous file survives any failure, and fixable failures are one line."""

from __future__ import annotations

import errno
import os

import pytest

from twins import atomic
from twins.atomic import atomic_path, remove_temporaries, write_text
from twins.errors import TwinsError


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EROFS, "choose a writable folder"),
        (errno.EACCES, "you may write to"),
    ],
)
def test_a_fixable_failure_is_one_line_and_keeps_the_previous_file(
    tmp_path, monkeypatch, code, fix
):
    target = tmp_path / "last.txt"
    write_text(target, "epoch 1")

    def fail(path, text, encoding=None):
        with open(path, "w") as file:
            file.write(text[:2])  # part of it reached the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.Path, "write_text", fail)
    with pytest.raises(TwinsError) as caught:
        write_text(target, "epoch 2")
    monkeypatch.undo()
    message = str(caught.value)
    assert os.strerror(code) in message and fix in message and "previous file is kept" in message
    assert "\n" not in message and isinstance(caught.value.__cause__, OSError)
    assert target.read_text() == "epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == ["last.txt"]


def test_other_errors_pass_through_unchanged(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError, match="bug"), atomic_path(target):
        raise RuntimeError("bug")
    with pytest.raises(OSError, match="odd") as caught, atomic_path(target):
        raise OSError(errno.EIO, "odd")
    assert not isinstance(caught.value, TwinsError)
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(TwinsError, match="a file stands where a folder is needed"):
        write_text(tmp_path / "out" / "config.yaml", "x")


def test_temporaries_of_killed_writes_are_removed(tmp_path):
    write_text(tmp_path / "last.pt", "kept")
    (tmp_path / ".last.0a1b2c3d.tmp.pt").write_text("half")
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
