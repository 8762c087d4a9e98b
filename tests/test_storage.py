"""twins.storage against local folders and a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import random
import signal
import socket
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from twins import storage
from twins.errors import TwinsError
from twins.train.stop import StopSignals


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A fresh, empty folder: local, or a prefix in the test bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_prefix")


def test_a_fingerprint_changes_when_the_file_is_replaced(root):
    blob = storage.join(root, "w.bin")
    storage.write_bytes(blob, b"first")
    first = storage.fingerprint(blob)
    assert storage.fingerprint(blob) == first
    time.sleep(0.01)  # a local file's modification time moves on
    storage.write_bytes(blob, b"other")  # the same size: told apart by ETag or time
    assert storage.fingerprint(blob) != first


def test_files_round_trip(root, tmp_path):
    blob = storage.join(root, "sub", "blob.bin")
    data = bytes(range(256)) * 5
    storage.write_bytes(blob, data)

    assert storage.exists(blob) and not storage.is_dir(blob)
    assert storage.is_dir(storage.join(root, "sub")) and storage.is_dir(root)
    assert storage.read_bytes(blob) == data
    assert storage.read_bytes(blob, 10, 20) == data[10:20]
    assert storage.read_bytes(blob, 1000) == data[1000:]
    assert storage.size(blob) == len(data)

    storage.write_bytes(storage.join(root, "a.txt"), b"a")
    assert storage.list_dir(root) == ["a.txt", "sub"]

    copy = tmp_path / "down" / "copy.bin"
    storage.get_file(blob, copy)
    assert copy.read_bytes() == data
    assert [p.name for p in copy.parent.iterdir()] == ["copy.bin"]  # no temporary left
    storage.put_file(copy, storage.join(root, "up.bin"))
    assert storage.read_bytes(storage.join(root, "up.bin")) == data

    storage.remove(blob)
    storage.remove(blob)  # gone already: fine
    assert not storage.exists(blob)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(blob)
    assert not storage.exists(storage.join(root, "never"))


def test_urls():
    assert storage.join("s3://b/p/", "x", "y.pt") == "s3://b/p/x/y.pt"
    assert storage.join("/data", "x") == "/data/x"
    assert storage.is_remote("s3://b/p") and storage.is_remote("obs://b/p")
    assert not storage.is_remote("/data") and not storage.is_remote("file:///data")
    assert storage.display("s3://user:secret@bucket/p") == "s3://bucket/p"


def test_obs_urls_read_the_same_objects(s3_prefix):
    storage.write_bytes(storage.join(s3_prefix, "x"), b"seed")
    obs = s3_prefix.replace("s3://", "obs://", 1)
    assert storage.read_bytes(storage.join(obs, "x")) == b"seed"
    assert storage.list_dir(obs) == ["x"]
    storage.check_access(obs)


def test_check_access_passes(s3_prefix):
    storage.write_bytes(storage.join(s3_prefix, "train", "x"), b"1")
    storage.check_access(s3_prefix)
    storage.check_access(storage.join(s3_prefix, "train", "x"))  # one object
    storage.check_access(s3_prefix, write=True)
    storage.check_access(storage.join(s3_prefix, "new"), write=True)
    # The write check leaves no object (SeaweedFS keeps the emptied folder `new`, S3 would not).
    assert "train" in storage.list_dir(s3_prefix)
    assert not [name for name in storage.list_dir(s3_prefix) if "check" in name]
    assert storage.list_dir(storage.join(s3_prefix, "new")) == []


def _refusal(url: str, write: bool = False) -> str:
    started = time.monotonic()
    with pytest.raises(TwinsError) as refused:
        storage.check_access(url, write=write)
    assert time.monotonic() - started < 10
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_check_access_names_each_problem(s3_prefix, s3_env, monkeypatch, caplog):
    storage.write_bytes(storage.join(s3_prefix, "x"), b"1")
    messages = []

    messages.append(_refusal(storage.join(s3_prefix, "missing")))
    assert "does not exist" in messages[-1] and "missing" in messages[-1]

    messages.append(_refusal("s3://no-such-bucket-twins/data"))
    assert "bucket 'no-such-bucket-twins' does not exist" in messages[-1]

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3_env.secret)
    messages.append(_refusal(s3_prefix))
    assert "secret key does not match" in messages[-1] and "AWS_SECRET_ACCESS_KEY" in messages[-1]
    messages.append(_refusal(s3_prefix, write=True))

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknownkeyid")
    messages.append(_refusal(s3_prefix))
    assert "key id is not known" in messages[-1] and "AWS_ACCESS_KEY_ID" in messages[-1]

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    messages.append(_refusal(s3_prefix))
    assert "unreachable" in messages[-1] and "check AWS_ENDPOINT_URL" in messages[-1]

    for text in [*messages, caplog.text]:
        assert s3_env.secret not in text


def test_credentials_written_in_a_url_are_refused_without_showing_them(s3_prefix, s3_env):
    url = s3_prefix.replace("s3://", f"s3://{s3_env.key}:{s3_env.secret}@", 1)
    for call in (storage.check_access, storage.read_bytes, storage.exists):
        with pytest.raises(TwinsError, match="credentials in it .* remove them") as refused:
            call(storage.join(url, "x"))
        assert s3_env.secret not in str(refused.value) and "\n" not in str(refused.value)


def test_a_wrong_secret_is_refused_by_the_server(s3_prefix, s3_env, monkeypatch):
    """The server checks credentials: without them it would accept anyone."""
    storage.write_bytes(storage.join(s3_prefix, "x"), b"1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(TwinsError, match="AWS_SECRET_ACCESS_KEY"):
        storage.read_bytes(storage.join(s3_prefix, "x"))
    with pytest.raises(TwinsError, match="AWS_SECRET_ACCESS_KEY"):
        storage.write_bytes(storage.join(s3_prefix, "y"), b"1")


def test_reads_ride_out_an_outage(s3_prefix, s3_env, monkeypatch, caplog):
    """The server is killed while a thread reads and started again a moment later: every read
    completes, with one warning for the outage and one line when it is back."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    urls = [storage.join(s3_prefix, f"{i}") for i in range(3)]
    for i, url in enumerate(urls):
        storage.write_bytes(url, bytes([i]) * 1000)
    results, failures = [], []
    reading = threading.Event()

    def read_loop() -> None:
        try:
            for n in range(60):
                results.append(storage.read_bytes(urls[n % 3]) == bytes([n % 3]) * 1000)
                reading.set()
                time.sleep(0.05)
        except Exception as error:  # reported by the assertion below
            failures.append(error)

    caplog.set_level(logging.WARNING, logger="twins.storage")
    thread = threading.Thread(target=read_loop)
    thread.start()
    assert reading.wait(30)
    s3_env.stop(kill=True)
    time.sleep(1.0)
    s3_env.start()
    thread.join(60)

    assert not failures and results == [True] * 60
    lines = [r.getMessage() for r in caplog.records if r.name == "twins.storage"]
    assert len([line for line in lines if "unreachable" in line]) == 1, lines
    assert len([line for line in lines if "reachable again" in line]) == 1, lines
    assert lines[0].startswith(f"storage: {urls[0].rsplit('/', 1)[0]}")


def test_retries_leave_the_global_random_stream_alone(s3_prefix, s3_env, monkeypatch):
    """The per-sample augmentation draws from `random` in a loader worker: a retry's jitter
    drawn from it too would change the training result after an outage."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    url = storage.join(s3_prefix, "x")
    storage.write_bytes(url, b"1")
    random.seed(7)
    before = random.getstate()
    s3_env.stop(kill=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(storage.read_bytes, url)  # retried until the server is back
        time.sleep(1.5)
        s3_env.start()
        assert answer.result(timeout=60) == b"1"
    assert random.getstate() == before


def test_a_store_back_from_an_outage_is_tried_again_within_seconds(monkeypatch):
    """However long the outage, the next attempt is at most a few seconds away."""
    waits, attempts = [], []
    monkeypatch.setattr(storage, "_wait", lambda seconds, _: waits.append(seconds) or True)

    def refused_a_while(fs, path):
        attempts.append(path)
        if len(attempts) <= 12:
            raise ConnectionRefusedError("refused")
        return b"back"

    assert storage._remote("s3://bucket/x", refused_a_while, budget=600) == b"back"
    assert len(waits) == 12 and max(waits) <= 4


def test_a_stop_signal_ends_the_retries_under_way_at_once(s3_prefix, s3_env, monkeypatch):
    """SIGTERM or Ctrl-C during an outage stops a run now, not after the retry budget."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "120")
    url = storage.join(s3_prefix, "x")
    storage.write_bytes(url, b"1")
    s3_env.stop(kill=True)
    try:
        with StopSignals(), concurrent.futures.ThreadPoolExecutor(1) as pool:
            reading = pool.submit(storage.read_bytes, url)
            time.sleep(1.0)  # retrying by now
            started = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(TwinsError, match="unreachable .* stopped waiting for it"):
                reading.result(timeout=30)
            assert time.monotonic() - started < 2
    finally:
        s3_env.start()
    assert storage.read_bytes(url) == b"1"  # later calls retry as usual


def test_retries_end_after_the_budget(s3_prefix, s3_env, monkeypatch):
    url = storage.join(s3_prefix, "x")
    storage.write_bytes(url, b"1")
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "1")
    s3_env.stop(kill=True)
    try:
        started = time.monotonic()
        with pytest.raises(TwinsError, match="unreachable .* check AWS_ENDPOINT_URL"):
            storage.read_bytes(url)
        assert time.monotonic() - started < 5
    finally:
        s3_env.start()


class _Objects(Dataset):
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, index: int):
        url = self.urls[index]
        data = storage.read_bytes(url)
        gc.collect()  # whatever of the parent's the worker has dropped is collected now
        return torch.tensor(list(data)), id(storage.filesystem(url))


def test_dataloader_workers_read_with_their_own_filesystem(s3_prefix):
    urls = [storage.join(s3_prefix, f"{i}.bin") for i in range(8)]
    for i, url in enumerate(urls):
        storage.write_bytes(url, bytes([i, i + 1]))
    parent = id(storage.filesystem(urls[0]))  # made and used before the fork
    assert storage.read_bytes(urls[0]) == bytes([0, 1])

    loader = DataLoader(
        _Objects(urls), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    got = list(loader)
    assert [data.tolist() for data, _ in got] == [[i, i + 1] for i in range(8)]
    assert parent not in {filesystem for _, filesystem in got}
    # The parent's pooled connection still answers: a worker that closed its copy of the socket
    # would have taken it off the epoll instance both share, and this read would hang.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(storage.read_bytes, urls[3])
        assert answer.result(timeout=20) == bytes([3, 4])
    assert id(storage.filesystem(urls[0])) == parent
