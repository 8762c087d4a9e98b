"""WebDataset shards in an S3 bucket (a real SeaweedFS server) indexed in place by `twins pack
--index-only`: not an object rewritten, and read through the node cache as the same shards on
disk."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from twins import storage
from twins.cli.main import main
from twins.data.packed.cache import ShardCache
from twins.data.packed.reader import ShardDataset, open_packed, verify_packed
from wds_shards import write_timm_shards


@pytest.fixture
def bucket(s3_prefix, monkeypatch) -> str:
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    return s3_prefix


def test_shards_in_a_bucket_are_indexed_in_place_and_read_through_the_cache(
    imagefolder, bucket, tmp_path
):
    local = write_timm_shards(imagefolder, tmp_path / "wds")
    for path in sorted(local.iterdir()):
        storage.put_file(path, storage.join(bucket, path.name))
    digest = lambda name: hashlib.sha256(storage.read_bytes(storage.join(bucket, name))).hexdigest()  # noqa: E731
    names = sorted(p.name for p in local.glob("*.tar"))
    before = {name: digest(name) for name in names}
    assert main(["pack", "--index-only", bucket]) == 0
    assert {name: digest(name) for name in names} == before
    assert verify_packed(bucket) == 9
    main(["pack", "--index-only", str(local)])
    remote = open_packed(
        bucket, {"train": None}, cache_dir=tmp_path / "cache", cache_size=1 << 30, shuffle_block=2
    )["train"]
    assert isinstance(remote.cache, ShardCache)
    on_disk = ShardDataset(str(local), "train", decode=remote.decode)
    assert remote.classes == on_disk.classes and len(remote) == len(on_disk) == 64
    for index in range(0, 64, 7):
        image, target = remote[index]
        assert target == on_disk[index][1]
        assert np.array_equal(image.numpy(), on_disk[index][0].numpy())
