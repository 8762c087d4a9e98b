"""A Parquet set in an S3 bucket (a real SeaweedFS server): checked at start in byte ranges,
trained from through the node cache of whole files, as from the same files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hub_parquet import imagefolder_to_parquet
from twins import storage
from twins.data.packed.writer import pack
from twins.data.parquet.reader import ParquetDataset
from twins.errors import TwinsError
from twins.tasks import fit
from twins.tasks.classify.data import build_datasets
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

RECIPE = {"epochs": 2, "batch_size": 8, "num_parallel_workers": 2, "shuffle_block": 1}
TIMINGS = ("epoch_seconds", "images_per_s", "output")


@pytest.fixture
def bucket(s3_prefix, monkeypatch) -> str:
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    return s3_prefix


@pytest.fixture(scope="module")
def parquet_set(imagefolder, tmp_path_factory) -> Path:
    return imagefolder_to_parquet(imagefolder, tmp_path_factory.mktemp("hub"))


def upload(folder: Path, url: str) -> None:
    for path in sorted(folder.rglob("*.parquet")):
        storage.put_file(path, storage.join(url, path.relative_to(folder).as_posix()))


def records(output: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in TIMINGS}
        for r in read_metrics(output / "metrics.jsonl")
    ]


def test_trained_from_a_bucket_as_from_a_folder(parquet_set, bucket, tiny_config, tmp_path):
    upload(parquet_set, bucket)
    cache = tmp_path / "cache"
    config = tiny_config(bucket, tmp_path / "run", **RECIPE, cache_dir=str(cache))
    train, val, _ = build_datasets(config)
    assert isinstance(train, ParquetDataset) and (len(train), len(val)) == (64, 14)
    fit(config)
    fit(tiny_config(parquet_set, tmp_path / "reference", **RECIPE))
    assert records(tmp_path / "run") == records(tmp_path / "reference")
    a = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    cached = sorted(p.name for p in cache.glob("shards/*/*.parquet"))
    assert cached == sorted(p.name for p in (parquet_set / "data").iterdir())


def test_a_cache_too_small_for_two_blocks_of_files_is_refused(
    parquet_set, bucket, tiny_config, tmp_path
):
    upload(parquet_set, bucket)
    config = tiny_config(bucket, tmp_path / "run", **RECIPE, cache_size="1KB")
    with pytest.raises(
        TwinsError, match=r"cache_size 1KB cannot hold the 2 × shuffle_block \(1\) files"
    ):
        build_datasets(config)


def test_packed_from_a_bucket_as_from_a_folder(parquet_set, bucket, tmp_path):
    upload(parquet_set, bucket)
    pack(bucket, str(tmp_path / "from-bucket"), shard_size=20_000, workers=1)
    pack(str(parquet_set), str(tmp_path / "from-folder"), shard_size=20_000, workers=1)
    tars = sorted(p.name for p in (tmp_path / "from-folder").glob("*.tar"))
    assert tars and tars == sorted(p.name for p in (tmp_path / "from-bucket").glob("*.tar"))
    for name in tars:
        a = (tmp_path / "from-bucket" / name).read_bytes()
        assert a == (tmp_path / "from-folder" / name).read_bytes()
