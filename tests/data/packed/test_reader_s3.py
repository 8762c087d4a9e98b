"""Packed data in an S3 bucket (a real SeaweedFS server): packed into it, trained from it
through the shard cache, resumed from it, and altered shards refused on download."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import twins.data.packed.writer
from twins import storage
from twins.cli.main import main
from twins.data.loader import TwinsDataLoader
from twins.data.packed.reader import ShardDataset, open_packed, verify_packed
from twins.data.packed.writer import pack
from twins.errors import TwinsError
from twins.tasks import fit
from twins.tasks.classify.data import build_datasets
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

SHARD_SIZE = 20_000  # 16 training shards and 4 validation shards of the 64 + 14 images
# Two loader workers, forked after the training process has used its own S3 connections.
RECIPE = {"epochs": 2, "batch_size": 8, "num_parallel_workers": 2, "shuffle_block": 2}
TIMINGS = ("epoch_seconds", "images_per_s", "output")


@pytest.fixture
def bucket(s3_prefix, monkeypatch) -> str:
    """A fresh prefix in the bucket; retries as long as a loaded test machine needs (the
    outages themselves are tested with twins.storage)."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    return s3_prefix


def records(output: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in TIMINGS}
        for r in read_metrics(output / "metrics.jsonl")
    ]


def test_packed_into_a_bucket_trained_and_resumed_from_it_as_from_a_folder(
    imagefolder, bucket, tiny_config, tmp_path
):
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=2)
    manifest = json.loads(storage.read_bytes(storage.join(bucket, "manifest.json")))
    assert manifest["splits"]["train"]["samples"] == 64
    assert verify_packed(bucket) == 20
    pack(imagefolder, str(tmp_path / "local"), shard_size=SHARD_SIZE, workers=1)
    for shard in manifest["splits"]["train"]["shards"][:2]:
        local = (tmp_path / "local" / shard["name"]).read_bytes()
        assert storage.read_bytes(storage.join(bucket, shard["name"])) == local

    cache = tmp_path / "cache"
    config = tiny_config(bucket, tmp_path / "run", **RECIPE, cache_dir=str(cache))
    fit(config, stop_after_epoch=1)  # the process ends after epoch 1; a second one resumes
    result = fit(config)
    assert result["epoch"] == 2 and result["val_images"] == 14
    fit(tiny_config(tmp_path / "local", tmp_path / "reference", **RECIPE))
    assert records(tmp_path / "run") == records(tmp_path / "reference")
    a = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    cached = sorted(p.name for p in cache.glob("shards/*/*.tar"))
    assert len(cached) == 20 and not list(cache.glob("shards/*/.*download"))


def test_the_cache_stays_within_its_size_and_refuses_an_altered_shard(
    imagefolder, bucket, tmp_path
):
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=1)
    limit = 4 * SHARD_SIZE
    splits = open_packed(
        bucket, {"train": None}, shuffle_block=1, cache_dir=tmp_path / "cache", cache_size=limit
    )
    train = splits["train"]
    train.set_epoch(0)
    assert all(train[i] is not None for i in range(len(train)))
    held = sum(p.stat().st_size for p in (tmp_path / "cache").glob("shards/*/*.tar"))
    assert 0 < held <= limit
    with pytest.raises(
        TwinsError,
        match=r"cache_size 80KB cannot hold the 2 × shuffle_block \(4\) shards of up to \d+\.\dKB .*: raise cache_size to at least \d+KB or",
    ):
        open_packed(bucket, {"train": None}, shuffle_block=4, cache_size=limit)

    name = "train-000005.tar"
    original = storage.read_bytes(storage.join(bucket, name))
    altered = bytearray(original)
    altered[600] ^= 1
    storage.write_bytes(storage.join(bucket, name), bytes(altered))
    fresh = ShardDataset(bucket, "train", cache=_cache_of(bucket, tmp_path / "fresh"))
    with pytest.raises(
        TwinsError,
        match=f"shard {name} of {bucket} as downloaded does not match its sha256 in the manifest: .*; delete {bucket}/{name} and re-run `twins pack {imagefolder} {bucket}`",
    ):
        fresh[fresh.starts[5]]
    assert not list((tmp_path / "fresh").glob(f"shards/*/{name}"))
    with pytest.raises(
        TwinsError,
        match=f"shard {name} of {bucket} does not match its sha256 in the manifest: .*; delete "
        f"{bucket}/{name} and re-run `twins pack",
    ):
        verify_packed(bucket)


def _cache_of(url: str, folder: Path):
    return open_packed(url, {"val": None}, cache_dir=folder, cache_size=10**9)["val"].cache


def test_a_shard_name_that_would_lead_out_of_the_cache_is_refused(bucket, tmp_path):
    outside = tmp_path / "outside" / "train-000000.tar"
    shard = {"name": str(outside), "samples": 1, "bytes": 10240, "sha256": "0" * 64}
    manifest = {
        "format": "twins-shards",
        "version": 1,
        "classes": ["a"],
        "splits": {"train": {"samples": 1, "shards": [shard]}},
    }
    storage.write_bytes(storage.join(bucket, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(TwinsError, match=f"names shard '{outside}' in split train, not a shard"):
        open_packed(bucket, {"train": None}, cache_dir=tmp_path / "cache", cache_size=10**9)
    assert not outside.parent.exists()


def test_verify_names_a_storage_problem_as_such(bucket, s3_env, monkeypatch, capsys):
    storage.write_bytes(storage.join(bucket, "manifest.json"), b"{}")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    problems = [
        ("AWS_SECRET_ACCESS_KEY", "wrong-" + s3_env.secret, bucket, "secret key does not match"),
        (None, None, "s3://no-such-bucket-twins/data", "bucket 'no-such-bucket-twins' does not"),
        ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}", bucket, "unreachable"),
    ]
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "1")
    for variable, value, url, line in problems:
        with monkeypatch.context() as changed:
            if variable:
                changed.setenv(variable, value)
            assert main(["pack", "--verify", url]) == 2
        error = capsys.readouterr().err
        # One error line; the storage layer's retry warnings before it are the run's own.
        errors = [text for text in error.splitlines() if not text.startswith("storage: ")]
        assert len(errors) == 1 and line in errors[0] and "not JSON" not in error, error


def test_a_shard_damaged_in_the_cache_is_fetched_again_and_the_cache_blamed(
    imagefolder, bucket, tmp_path, caplog
):
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=1)

    def first_image(shard: int) -> torch.Tensor:
        train = open_packed(
            bucket, {"train": None}, cache_dir=tmp_path / "cache", cache_size=10**9
        )["train"]
        return torch.from_numpy(np.array(train[train.starts[shard]][0]))  # a PIL image's pixels

    name = "train-000002.tar"
    original = first_image(2)
    cached = next((tmp_path / "cache").glob(f"shards/*/{name}"))
    index = json.loads(storage.read_bytes(storage.join(bucket, "train-000002.idx.json")))
    damaged = bytearray(cached.read_bytes())
    damaged[index["members"][0][2] + 200 : index["members"][0][2] + 400] = bytes(200)
    cached.write_bytes(bytes(damaged))  # the same size, in place, between two runs
    caplog.set_level(logging.WARNING, logger="twins.data.packed.cache")
    assert torch.equal(first_image(2), original)  # the next run reads what was packed
    assert cached.read_bytes() == storage.read_bytes(storage.join(bucket, name))
    assert f"shard {name} in the cache" in caplog.text and "damaged there" in caplog.text
    assert f"the data at {bucket} is not at fault" in caplog.text


def test_an_error_in_a_loader_worker_is_one_line_naming_the_data(
    imagefolder, bucket, tiny_config, tmp_path
):
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=1)
    name = "train-000005.tar"
    altered = bytearray(storage.read_bytes(storage.join(bucket, name)))
    altered[600] ^= 1
    storage.write_bytes(storage.join(bucket, name), bytes(altered))
    config = tiny_config(bucket, tmp_path / "run", **RECIPE, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(TwinsError) as raised:
        fit(config)  # the shards are read in the two loader workers
    message = str(raised.value)
    assert "\n" not in message and "DataLoader worker" not in message, message
    assert message.startswith(f"shard {name} of {bucket} as downloaded does not match")


def test_a_cache_dir_that_cannot_be_written_is_refused_at_start(imagefolder, bucket, tmp_path):
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=1)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(TwinsError, match=r"cache_dir .*/file/cache cannot be written") as raised:
        open_packed(
            bucket, {"train": None}, cache_dir=tmp_path / "file" / "cache", cache_size=10**9
        )
    assert raised.value.argument == "cache_dir" and bucket in str(raised.value)


def test_data_behind_a_bad_endpoint_or_secret_is_refused_within_seconds(
    bucket, s3_env, monkeypatch, tiny_config, tmp_path
):
    """The data's URL is checked at start as the output's is: not after the whole retry
    budget, and with the line that names the problem."""
    config = tiny_config(bucket, tmp_path / "run")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for variable, value, line in [
        ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}", "unreachable"),
        ("AWS_SECRET_ACCESS_KEY", "wrong-" + s3_env.secret, "secret key does not match"),
    ]:
        with monkeypatch.context() as changed:
            changed.setenv(variable, value)
            started = time.monotonic()
            with pytest.raises(TwinsError, match=line):
                build_datasets(config)
            assert time.monotonic() - started < 15


def test_pack_checks_its_bucket_before_it_reads_an_image(imagefolder, bucket, monkeypatch):
    def read_nothing(*args, **kwargs):
        raise AssertionError("images read before the bucket was checked")

    monkeypatch.setattr(twins.data.packed.writer, "_plan", read_nothing)
    with pytest.raises(TwinsError, match="bucket 'no-such-bucket-twins' does not exist"):
        pack(imagefolder, "s3://no-such-bucket-twins/packed", shard_size=SHARD_SIZE, workers=1)


def test_a_run_through_an_outage_ends_on_the_unbroken_run_s_weights(
    imagefolder, bucket, s3_env, tiny_config, tmp_path, monkeypatch
):
    """The store is killed as the first epoch starts, before the loader workers have fetched a
    shard, and started again 3 s later: the workers' retries change nothing in the numbers."""
    pack(imagefolder, bucket, shard_size=SHARD_SIZE, workers=1)
    fit(tiny_config(bucket, tmp_path / "unbroken", **RECIPE, cache_dir=str(tmp_path / "cache1")))

    back, done, outages = threading.Event(), threading.Event(), []
    iterate = TwinsDataLoader.__iter__

    def restart_later() -> None:
        time.sleep(3)
        s3_env.start()  # the server lives as long as this thread: it waits for the test
        back.set()
        done.wait(300)

    def outage_first(loader):
        if not outages:
            outages.append(loader)
            s3_env.stop(kill=True)
            threading.Thread(target=restart_later, daemon=True).start()
        return iterate(loader)

    monkeypatch.setattr(TwinsDataLoader, "__iter__", outage_first)
    try:
        fit(tiny_config(bucket, tmp_path / "broken", **RECIPE, cache_dir=str(tmp_path / "cache2")))
    finally:
        back.wait(120)  # the server may answer reads before its start is complete
        done.set()
        s3_env.stop()
        s3_env.start()  # from the main thread again
    assert back.is_set() and len(outages) == 1
    assert records(tmp_path / "broken") == records(tmp_path / "unbroken")
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "broken" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
