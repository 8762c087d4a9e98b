"""The node-local shard cache shared by several processes: each shard downloaded once, whole,
and never evicted while a process holds it."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import pickle
import shutil
import threading
import time
from functools import partial
from pathlib import Path

import pytest

import twins.data.packed.cache
from twins.data.packed.cache import ShardCache
from twins.errors import TwinsError

SHARD = 10_000


@pytest.fixture
def store(tmp_path) -> dict[str, tuple[int, str]]:
    """Six shards of SHARD bytes in tmp_path / "store"; name -> (bytes, sha256)."""
    folder = tmp_path / "store"
    folder.mkdir()
    expected = {}
    for number in range(6):
        data = bytes([number]) * SHARD
        (folder / f"s{number}.tar").write_bytes(data)
        expected[f"s{number}.tar"] = (SHARD, hashlib.sha256(data).hexdigest())
    return expected


def copy_and_log(store: Path, log: Path, name: str, path: Path) -> None:
    with open(log, "a") as file:
        file.write(name + "\n")
    shutil.copyfile(store / name, path)


def make_cache(tmp_path: Path, expected, limit: int = 10**9) -> ShardCache:
    download = partial(copy_and_log, tmp_path / "store", tmp_path / "log")
    return ShardCache(tmp_path / "cache", "data", limit, download, expected)


def read_all(cache: ShardCache, names: list[str]) -> list[bytes]:
    return [cache.path(name).read_bytes()[:1] for name in names]


def test_processes_sharing_the_cache_download_each_shard_once(tmp_path, store):
    cache = make_cache(tmp_path, store)
    names = sorted(store)
    # spawn: a forked pool can hang on locks that threads of earlier tests held at the fork
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(read_all, [(cache, names), (cache, names[::-1]), (cache, names)])
    assert all(sorted(r) == [bytes([n]) for n in range(6)] for r in results)
    assert sorted((tmp_path / "log").read_text().split()) == names


def hold_then_wait(cache: ShardCache, name: str, held, done) -> None:
    cache.path(name)
    held.set()
    done.wait(30)


def test_a_held_shard_is_not_evicted_and_the_rest_stay_within_the_limit(tmp_path, store):
    cache = make_cache(tmp_path, store, limit=3 * SHARD)
    context = multiprocessing.get_context("fork")
    held, done = context.Event(), context.Event()
    holder = context.Process(target=hold_then_wait, args=(cache, "s0.tar", held, done))
    holder.start()
    try:
        assert held.wait(30)
        for name in sorted(store)[1:]:
            cache.path(name)
            cache.release_all_but({name})
        cached = sorted(p.name for p in (tmp_path / "cache" / "shards" / "data").glob("*.tar"))
        assert "s0.tar" in cached and len(cached) <= 3
    finally:
        done.set()
        holder.join(30)


def test_an_altered_download_is_never_used(tmp_path, store):
    (tmp_path / "store" / "s2.tar").write_bytes(b"x" * SHARD)
    cache = make_cache(tmp_path, store)
    with pytest.raises(
        TwinsError, match="shard s2.tar of .* as downloaded does not match its sha256"
    ):
        cache.path("s2.tar")
    left = sorted(p.name for p in (tmp_path / "cache" / "shards" / "data").iterdir())
    assert left == ["s2.tar.lock"]  # neither the file nor a partial one, nor its reservation


_present = ShardCache._present


def _slow_present(cache: ShardCache, name: str) -> bool:
    time.sleep(0.01)  # a slower existence check, as on a busy disk: widens the race
    return _present(cache, name)


def test_the_reader_and_prefetch_threads_of_one_process_never_wait_on_each_other(
    tmp_path, store, monkeypatch
):
    """Both threads of one process may want a shard that is not cached yet: flock locks belong
    to the open file description, so one thread waiting for an exclusive lock while the other
    holds a shared one on the same shard would wait for ever."""
    monkeypatch.setattr(ShardCache, "_present", _slow_present)
    for trial in range(200):
        cache = ShardCache(
            tmp_path / "cache", f"t{trial}", 10**9, make_cache(tmp_path, store).download, store
        )
        cache.prefetch(["s0.tar", "s1.tar"])
        reader = threading.Thread(target=read_all, args=(cache, ["s0.tar", "s1.tar"]), daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), f"the reader hung in trial {trial}"


def test_a_run_says_once_that_the_cache_is_over_its_size(tmp_path, store, caplog):
    caplog.set_level(logging.WARNING, logger="twins.data.packed.cache")
    for _run in range(2):
        for cached in (tmp_path / "cache").glob("shards/data/*.tar"):
            cached.unlink()
        cache = make_cache(tmp_path, store, limit=SHARD + 1)
        cache.path("s0.tar")  # held throughout: each other shard is over the limit
        for name in sorted(store)[1:]:
            worker = pickle.loads(pickle.dumps(cache))  # a loader worker of the same run
            worker.path(name)
            worker.release_all_but(set())
        cache.release_all_but(set())
    said = [r.getMessage() for r in caplog.records if "over its cache_size" in r.getMessage()]
    assert len(said) == 2, said  # once per run, not once per download
    assert "holds 20KB in shards being read: over its cache_size of 10KB" in said[0]


def test_each_run_checks_a_cached_shard_once(tmp_path, store, monkeypatch):
    """Two runs (or two ranks of one run, each its own cache object) take turns on a shard:
    each hashes it once, not at every turn."""
    hashed = []
    file_sha256 = twins.data.packed.cache.file_sha256
    monkeypatch.setattr(
        twins.data.packed.cache,
        "file_sha256",
        lambda path: hashed.append(path) or file_sha256(path),
    )
    first, second = make_cache(tmp_path, store), make_cache(tmp_path, store)
    for cache in (first, second, first, second, first):
        cache.path("s0.tar")
        cache.release_all_but(set())
    assert len(hashed) == 2  # the download, and the second run's check
    (tmp_path / "cache" / "shards" / "data" / "s0.tar").write_bytes(b"x" * SHARD)
    make_cache(tmp_path, store).path("s0.tar")  # a third run finds it damaged
    assert (tmp_path / "cache" / "shards" / "data" / "s0.tar").read_bytes() == bytes([0]) * SHARD
