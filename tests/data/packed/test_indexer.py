"""`twins pack --index-only`: WebDataset shards written by others (webdataset's TarWriter)
indexed in place, not a byte of them changed, read by index as the ImageFolder they hold;
samples without an image or label named; tars that no longer match their indexes refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from twins.cli.main import main
from twins.data.folder import SafeImageFolder
from twins.data.packed.indexer import index_shards
from twins.data.packed.reader import ShardDataset, verify_packed
from twins.errors import TwinsError
from wds_shards import folder_samples, write_timm_shards


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.tar")}


@pytest.fixture
def timm_shards(imagefolder, tmp_path) -> Path:
    return write_timm_shards(imagefolder, tmp_path / "wds")


def test_timm_shards_are_indexed_in_place_and_read_as_the_image_folder(imagefolder, timm_shards):
    before = hashes(timm_shards)
    report = index_shards(str(timm_shards))
    assert report.samples == {"train": 64, "val": 14} and report.shards == 7 + 2
    assert hashes(timm_shards) == before  # not a byte rewritten
    assert verify_packed(str(timm_shards)) == 9
    for split in ("train", "val"):
        shards = ShardDataset(str(timm_shards), split)
        folder = SafeImageFolder(imagefolder / split)
        assert shards.classes == [str(i) for i in range(4)] and len(shards) == len(folder)
        assert shards.shard_sizes[0] == 10
        for index in range(len(shards)):
            image, target = shards[index]
            expected, expected_target = folder[index]
            assert target == expected_target
            assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert shards.file_name(0) == f"{timm_shards}/tiny-validation-0000.tar:class_0_0.png"


def test_a_plain_set_with_txt_names_and_samples_lacking_a_part(imagefolder, tmp_path, capsys):
    output = tmp_path / "plain"
    output.mkdir()
    for split in ("train", "val"):
        samples = folder_samples(imagefolder, split)
        with wds.TarWriter(str(output / f"mine-{split}-0.tar")) as sink:
            for key, image, _, name in samples:
                sink.write({"__key__": key, "png": image, "txt": name})
            if split == "train":
                sink.write({"__key__": "orphan_label", "txt": "class_0"})
                sink.write({"__key__": "orphan_image", "jpg": samples[0][1]})
    (output / "notes-test-0.tar").write_bytes(b"")
    assert main(["pack", "--index-only", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"indexed 64 train, 14 val samples in 2 shards at {output}" in printed
    assert (
        "left out 2 samples (listed in manifest.json): mine-train-0.tar:orphan_label (no image), mine-train-0.tar:orphan_image (no label)"
        in printed
    )
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    assert len(manifest["left_out"]) == 2
    train = ShardDataset(str(output), "train")
    assert [train[i][1] for i in (0, 16, 63)] == [0, 1, 3]
    assert verify_packed(str(output)) == 2


def test_tars_changed_since_they_were_indexed_are_refused(timm_shards):
    index_shards(str(timm_shards))
    shard = timm_shards / "tiny-train-0003.tar"
    with wds.TarWriter(str(shard)) as sink:  # written again with one sample fewer
        sink.write({"__key__": "x", "png": b"not much", "cls": 1})
    with pytest.raises(TwinsError) as raised:
        ShardDataset(str(timm_shards), "train")
    message = str(raised.value)
    assert message.startswith(f"shard tiny-train-0003.tar of {timm_shards} has ")
    assert message.endswith(f"re-run `twins pack --index-only {timm_shards}`")
    index_shards(str(timm_shards))
    assert len(ShardDataset(str(timm_shards), "train")) == 64 - 10 + 1


def test_an_index_that_disagrees_with_its_tar_is_refused(timm_shards):
    index_shards(str(timm_shards))
    index = timm_shards / "tiny-train-0001.idx.json"
    value = json.loads(index.read_text())
    value["members"][0][4] = 3  # another class
    index.write_text(json.dumps(value))
    with pytest.raises(TwinsError) as raised:
        ShardDataset(str(timm_shards), "train")
    assert str(raised.value).startswith(
        f"the index {timm_shards}/tiny-train-0001.idx.json of shard tiny-train-0001.tar does "
        "not match its sha256 in the manifest"
    )
    assert str(raised.value).endswith(f"re-run `twins pack --index-only {timm_shards}`")


def test_shards_without_a_split_name_are_refused(imagefolder, tmp_path):
    (tmp_path / "x").mkdir()
    with wds.TarWriter(str(tmp_path / "x" / "data-0000.tar")) as sink:
        sink.write({"__key__": "a", "png": b"x", "cls": 0})
    with pytest.raises(TwinsError, match=r"holds no train shards: name them \{prefix\}-train-NNNN"):
        index_shards(str(tmp_path / "x"))


def test_verify_finds_a_tar_altered_in_place(timm_shards):
    index_shards(str(timm_shards))
    shard = timm_shards / "tiny-train-0002.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # inside the first image: same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(TwinsError) as raised:
        verify_packed(str(timm_shards))
    assert str(raised.value) == (
        f"shard tiny-train-0002.tar of {timm_shards} does not match its sha256 in the manifest: "
        f"it was altered or damaged; re-run `twins pack --index-only {timm_shards}`"
    )


def test_a_label_outside_the_classes_is_refused_before_anything_is_written(timm_shards):
    (timm_shards / "classes.json").write_text(json.dumps(["a", "b", "c"]))  # class 3 has no name
    with pytest.raises(TwinsError) as raised:
        index_shards(str(timm_shards))
    assert str(raised.value).startswith(
        "class_3_0.png of shard tiny-train-0004.tar has the label '3', not one of the 3 classes: "
        "fix its class_3_0.cls, or name every class in classes.json"
    )
    assert not list(timm_shards.glob("*.idx.json")) and not (timm_shards / "manifest.json").exists()
