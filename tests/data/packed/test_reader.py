"""A packed data set read by index: the samples an ImageFolder gives, broken images skipped and
counted, and a manifest that does not match its shards refused at start."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

import twins.data.packed.reader
from factories import make_config
from twins.data.folder import SafeImageFolder
from twins.data.packed.reader import ShardDataset, open_packed, verify_packed
from twins.data.packed.writer import pack
from twins.errors import TwinsError
from twins.tasks import evaluate_checkpoint, fit
from twins.tasks.classify.data import build_datasets


@pytest.fixture
def packed_copy(imagefolder, tmp_path) -> Path:
    pack(imagefolder, str(tmp_path / "packed"), shard_size=20_000, workers=1)
    return tmp_path / "packed"


def test_samples_are_those_of_the_image_folder(imagefolder, packed_copy):
    for split in ("train", "val"):
        folder = SafeImageFolder(imagefolder / split)
        by_name = {
            Path(p).relative_to(imagefolder / split).as_posix(): i
            for i, (p, _) in enumerate(folder.samples)
        }
        shards = ShardDataset(str(packed_copy), split)
        assert len(shards) == len(folder) and shards.classes == folder.classes
        for index in range(len(shards)):
            name = shards.file_name(index).rsplit("(packed from ", 1)[1].rstrip(")")
            image, target = shards[index]
            expected, expected_target = folder[by_name[name]]
            assert target == expected_target
            assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_reads_in_any_order_keep_a_bounded_number_of_shard_files_open(packed_copy, monkeypatch):
    monkeypatch.setattr(twins.data.packed.reader, "OPEN_SHARDS", 3)
    open_files = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    shards = ShardDataset(str(packed_copy), "train")
    before = open_files()  # with the counters' shared memory
    assert len(shards.shards) > 3
    in_order = [shards[i] for i in range(len(shards))]
    for index in np.random.default_rng(0).permutation(len(shards)).tolist():
        image, target = shards[index]
        assert target == in_order[index][1]
        assert np.array_equal(np.asarray(image), np.asarray(in_order[index][0]))
        assert open_files() <= before + 3
    del shards
    gc.collect()
    assert open_files() <= before


def test_broken_and_converted_images_in_a_shard_are_counted(make_imagefolder, tmp_path, caplog):
    data = make_imagefolder(tmp_path / "data", 4, [1, 1])
    (data / "train" / "class_0" / "broken.png").write_bytes(b"not an image")
    gray = data / "train" / "class_1" / "0.png"
    Image.open(gray).convert("L").save(gray)
    pack(data, str(tmp_path / "packed"))
    config = make_config(data_url=str(tmp_path / "packed"), num_classes=2)
    train, val, classes = build_datasets(config)
    assert isinstance(train, ShardDataset) and classes == ["class_0", "class_1"]
    with caplog.at_level(logging.WARNING):
        samples = [train[i] for i in range(len(train))] + [train[i] for i in range(len(train))]
    assert sum(s is None for s in samples) == 2
    assert (train.tried, train.skipped, train.converted) == (18, 2, 2)
    assert (
        len(train.broken_files) == 1 and "(packed from class_0/broken.png)" in train.broken_files[0]
    )
    assert caplog.text.count("skipping unreadable image") == 1
    # the training split: a uint8 image and its random-erasing table (applied on the device)
    assert all(s[0][0].shape == (3, 32, 32) for s in samples if s is not None)


def test_a_shard_that_does_not_match_the_manifest_is_named_with_the_fix(packed_copy):
    url = str(packed_copy)
    shard = packed_copy / "train-000003.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[:-1024])
    with pytest.raises(
        TwinsError,
        match=r"shard train-000003.tar of .* has \d+ bytes, the manifest says \d+: it is truncated or altered; re-run `twins pack",
    ):
        ShardDataset(url, "train")
    shard.unlink()
    with pytest.raises(
        TwinsError, match="shard train-000003.tar of .* is missing; re-run `twins pack"
    ):
        ShardDataset(url, "train")
    altered = bytearray(data)
    altered[600] ^= 1
    shard.write_bytes(bytes(altered))
    ShardDataset(url, "train")  # the same size: only the hashes tell
    with pytest.raises(TwinsError, match="shard train-000003.tar of .* does not match its sha256"):
        verify_packed(url)
    shard.write_bytes(data)
    index = packed_copy / "val-000001.idx.json"
    members = json.loads(index.read_text())
    members["sha256"] = "0" * 64
    index.write_text(json.dumps(members))
    with pytest.raises(
        TwinsError, match="the index .*val-000001.idx.json of shard val-000001.tar does not match"
    ):
        ShardDataset(url, "val")


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def relabel_first(index: dict) -> None:
    member = index["members"][0]
    member[4] = 1 - member[4] if member[4] < 2 else 0


def test_an_edited_index_or_manifest_is_refused_and_a_rerun_of_pack_repairs_it(
    imagefolder, packed_copy
):
    url, index = str(packed_copy), packed_copy / "train-000002.idx.json"
    original = index.read_bytes()
    edit_json(index, relabel_first)
    with pytest.raises(TwinsError, match="train-000002.idx.json of shard train-000002.tar does"):
        ShardDataset(url, "train")
    with pytest.raises(TwinsError, match="train-000002.idx.json of shard train-000002.tar does"):
        verify_packed(url)
    pack(imagefolder, url, shard_size=20_000, workers=1)  # the edited index is written anew
    assert index.read_bytes() == original
    ShardDataset(url, "train")

    # A manifest of before index_sha256: the classes still have to match the class folders.
    edit_json(
        packed_copy / "manifest.json",
        lambda m: m["splits"]["train"]["shards"][2].pop("index_sha256"),
    )
    edit_json(index, relabel_first)
    with pytest.raises(
        TwinsError, match="of shard train-000002.tar in .* has class .* packed from"
    ):
        ShardDataset(url, "train")
    index.write_bytes(original)
    edit_json(packed_copy / "manifest.json", lambda m: m["classes"].reverse())
    with pytest.raises(TwinsError, match="the index or the manifest's classes were edited"):
        ShardDataset(url, "train")
    edit_json(packed_copy / "manifest.json", lambda m: m["classes"].reverse())
    edit_json(packed_copy / "manifest.json", lambda m: m["splits"]["val"].update(samples=15))
    with pytest.raises(TwinsError, match="counts 15 val samples, its shards 14"):
        ShardDataset(url, "val")


def test_verify_checks_each_index_against_the_tar_members(packed_copy):
    url, index = str(packed_copy), packed_copy / "train-000002.idx.json"

    def shift_first(value: dict) -> None:
        value["members"][0][2] += 512

    edit_json(index, shift_first)
    edit_json(  # as if the index had been packed so
        packed_copy / "manifest.json",
        lambda m: m["splits"]["train"]["shards"][2].update(
            index_sha256=hashlib.sha256(index.read_bytes()).hexdigest()
        ),
    )
    ShardDataset(url, "train")  # in bounds: only the tar tells
    with pytest.raises(
        TwinsError,
        match="index of shard train-000002.tar of .* does not match the tar's members at train_",
    ):
        verify_packed(url)


@pytest.mark.parametrize(
    ("entry", "refusal"),
    [
        ({"name": "/tmp/train-000000.tar"}, "names shard '/tmp/train-000000.tar' in split train"),
        ({"name": "../train-000000.tar"}, "names shard '../train-000000.tar' in split train"),
        ({"index": "../../x.idx.json"}, "names the index of shard train-000000.tar '../../x"),
        ({"name": "train-000001.tar"}, "lists shard train-000001.tar where train-000000.tar"),
    ],
)
def test_names_in_the_manifest_are_checked_before_they_become_paths(
    packed_copy, tmp_path, entry, refusal
):
    manifest = json.loads((packed_copy / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0].update(entry)
    (packed_copy / "manifest.json").write_text(json.dumps(manifest))
    for read in (
        lambda: ShardDataset(str(packed_copy), "train"),
        lambda: verify_packed(str(packed_copy)),
        lambda: open_packed(f"file://{packed_copy}", {"train": None}, cache_dir=tmp_path / "cache"),
    ):
        with pytest.raises(TwinsError, match=re.escape(refusal)) as refused:
            read()
        assert "re-run `twins pack`" in str(refused.value) and "\n" not in str(refused.value)
    assert not list(Path("/tmp").glob("train-000000.tar*"))


def test_a_dropped_shard_entry_is_refused(packed_copy):
    manifest = json.loads((packed_copy / "manifest.json").read_text())
    del manifest["splits"]["val"]["shards"][1]
    (packed_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TwinsError, match="lists shard val-000002.tar where val-000001.tar"):
        ShardDataset(str(packed_copy), "val")


def test_an_image_folder_behind_a_url_is_refused_with_the_command_that_packs_it(image_folder):
    memory = fsspec.filesystem("memory")
    memory.put(str(image_folder), "/bucket/imagenet", recursive=True)
    config = make_config(data_url="memory://bucket/imagenet")
    with pytest.raises(
        TwinsError,
        match=r"holds no packed data set .* `twins pack IMAGEFOLDER memory://bucket/imagenet`",
    ):
        build_datasets(config)


def test_eval_on_the_packed_data_gives_the_folder_s_numbers(imagefolder, packed_copy, tmp_path):
    fit(make_config(data_url=str(packed_copy), train_url=str(tmp_path / "run"), epochs=1))
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    on_folder = evaluate_checkpoint(make_config(data_url=str(imagefolder)), best)
    on_shards = evaluate_checkpoint(make_config(data_url=str(packed_copy)), best)
    assert on_shards["images"] == on_folder["images"] == 14
    assert on_shards["top1"] == on_folder["top1"]
    assert on_shards["loss"] == pytest.approx(on_folder["loss"], rel=1e-6)
