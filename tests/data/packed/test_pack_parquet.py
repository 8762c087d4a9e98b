"""`twins pack` from a Parquet set in the Hub's layout: the shards hold every row once, each
row group read once, with its class; a rerun keeps them; the result trains as packed data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hub_parquet import imagefolder_to_parquet
from twins.cli.main import main
from twins.data.packed.reader import ShardDataset, verify_packed
from twins.data.packed.writer import pack
from twins.data.parquet.reader import open_parquet


@pytest.fixture(scope="module")
def parquet_set(imagefolder, tmp_path_factory) -> Path:
    return imagefolder_to_parquet(imagefolder, tmp_path_factory.mktemp("hub"), row_group_size=4)


def test_every_row_is_packed_once_with_its_class(parquet_set, tmp_path, capsys):
    assert main(["pack", str(parquet_set), str(tmp_path / "out"), "--shard-size", "20000"]) == 0
    assert "packed 64 train, 14 val images into" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source_format"] == "parquet" and len(manifest["splits"]["train"]["shards"]) > 2
    assert verify_packed(str(tmp_path / "out")) == sum(
        len(s["shards"]) for s in manifest["splits"].values()
    )
    for split in ("train", "val"):
        rows = open_parquet(str(parquet_set), {split: None})[split]
        shards = ShardDataset(str(tmp_path / "out"), split, decode=rows.decode)
        assert shards.classes == rows.classes and len(shards) == len(rows)
        seen = set()
        for index in range(len(shards)):
            source = shards.file_name(index).rsplit("(packed from data/", 1)[1].rstrip(")")
            name, row = source.rsplit(":", 1)
            position = rows.starts[rows.files.index(name)] + int(row)
            seen.add(position)
            image, target = shards[index]
            expected, expected_target = rows[position]
            assert target == expected_target
            assert np.array_equal(np.asarray(image), np.asarray(expected))  # same decoder
        assert seen == set(range(len(rows)))
    # a rerun keeps every shard
    report = pack(str(parquet_set), str(tmp_path / "out"), shard_size=20_000, workers=1)
    assert report.kept == report.shards
