"""`twins pack`: WebDataset shards with an index and a manifest, deterministic, resumable after
a SIGKILL, readable by timm's `wds/` reader."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import timm.data
from PIL import Image

from twins.cli.main import main
from twins.data.folder import SafeImageFolder
from twins.data.packed.writer import pack
from twins.errors import TwinsError

SHARD_SIZE = 20_000  # about 6 of the 32 x 32 PNGs: 16 training shards, 4 validation shards


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def packed(imagefolder, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("packed")
    pack(imagefolder, str(output), shard_size=SHARD_SIZE, workers=2)
    return output


def test_shards_hold_every_image_once_with_its_class_in_an_indexed_tar(imagefolder, packed):
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    assert {s: v["samples"] for s, v in manifest["splits"].items()} == {"train": 64, "val": 14}
    assert manifest["pack_seed"] == 0 and manifest["resize_short"] is None
    for split in ("train", "val"):
        folder = SafeImageFolder(imagefolder / split)
        expected = {
            (Path(p).relative_to(imagefolder / split).as_posix(), t) for p, t in folder.samples
        }
        found = set()
        for shard in manifest["splits"][split]["shards"]:
            data = (packed / shard["name"]).read_bytes()
            assert len(data) == shard["bytes"]
            index = json.loads((packed / shard["index"]).read_text())
            with tarfile.open(packed / shard["name"]) as tar:
                members = tar.getmembers()
                labels = [tar.extractfile(m).read() for m in members[1::2]]
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
            assert [m.name for m in members] == [
                f"{key}{ext}" for key, ext, *_ in index["members"] for ext in (ext, ".cls")
            ]
            for (key, ext, offset, size, target, source), label in zip(
                index["members"], labels, strict=True
            ):
                assert "." not in key and ext == ".png"
                assert data[offset : offset + size] == (imagefolder / split / source).read_bytes()
                assert label == str(target).encode()
                found.add((source, target))
        assert found == expected
    first = json.loads((packed / "train-000000.idx.json").read_text())["members"]
    assert len({target for *_, target, _ in first}) > 1  # shuffled across classes


def test_the_same_input_gives_the_same_bytes(imagefolder, packed, tmp_path):
    pack(imagefolder, str(tmp_path / "again"), shard_size=SHARD_SIZE, workers=1)
    assert tree(tmp_path / "again") == tree(packed)


KILLED_PACK = """
import os, signal, sys
import twins.data.packed.writer as pack_module
real = pack_module._write_tar
calls = []
def dying(path, task):
    calls.append(1)
    if len(calls) == 3:  # half way through the third shard
        with open(path, "wb") as file:
            file.write(b"\\0" * 4096)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, task)
pack_module._write_tar = dying
from twins.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_pack_killed_midway_finishes_on_a_rerun_without_a_corrupt_shard(
    imagefolder, packed, tmp_path
):
    output = tmp_path / "out"
    command = [sys.executable, "-c", KILLED_PACK, "pack", str(imagefolder), str(output)]
    command += ["--shard-size", str(SHARD_SIZE), "--workers", "1"]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (output / "manifest.json").exists()
    assert (output / "train-000001.tar").exists() and not (output / "train-000002.tar").exists()
    assert list(
        output.glob(".train-000002.*.tmp.tar")
    )  # the unfinished one, under a temporary name
    report = pack(imagefolder, str(output), shard_size=SHARD_SIZE, workers=1)
    assert report.kept == 2
    assert tree(output) == tree(packed)


def test_a_changed_shard_is_rewritten_on_a_rerun(imagefolder, packed, tmp_path):
    output = tmp_path / "out"
    pack(imagefolder, str(output), shard_size=SHARD_SIZE, workers=1)
    shard = output / "train-000004.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    (output / "train-000099.tar").write_bytes(b"left from an earlier pack")
    report = pack(imagefolder, str(output), shard_size=SHARD_SIZE, workers=1)
    assert report.kept == report.shards - 1
    assert tree(output) == tree(packed)


def test_timm_wds_reader_reads_our_shards_with_their_labels(packed):
    manifest = json.loads((packed / "manifest.json").read_text())
    expected = []
    for shard in manifest["splits"]["val"]["shards"]:
        expected += [m[4] for m in json.loads((packed / shard["index"]).read_text())["members"]]
    dataset = timm.data.create_dataset("wds/twins", root=str(packed), split="val")
    samples = list(dataset)
    assert len(dataset) == 14
    assert [target for _, target in samples] == expected
    assert all(image.size == (32, 32) and image.mode == "RGB" for image, _ in samples)
    train = timm.data.create_dataset("wds/twins", root=str(packed), split="train", is_training=True)
    assert len(train) == 64


def test_resize_short_re_encodes_with_the_short_side_resized(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / "data", 2, [1, 1], size=(40, 60))
    pack(data, str(tmp_path / "out"), resize_short=20)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["resize_short"] == 20
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        images = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        assert len(images) == 4
        assert Image.open(tar.extractfile(images[0])).size == (30, 20)


def test_bad_places_are_refused_in_one_line(imagefolder, make_imagefolder, tmp_path, capsys):
    with pytest.raises(TwinsError, match="lies inside SRC"):
        pack(imagefolder, str(imagefolder / "shards"))
    half = tmp_path / "half"
    (half / "train" / "a").mkdir(parents=True)
    with pytest.raises(TwinsError, match=r"has no val/ folder"):
        pack(half, str(tmp_path / "out"))
    assert main(["pack", str(half), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no val/ folder: SRC must be an ImageFolder" in error
    assert main(["pack", str(imagefolder)]) == 2
    assert not os.path.exists(tmp_path / "out")


def test_pack_command_reports_and_verifies(imagefolder, packed, tmp_path, capsys):
    assert main(["pack", str(imagefolder), str(tmp_path / "out"), "--shard-size", "1MB"]) == 0
    assert "packed 64 train, 14 val images into 2 shards" in capsys.readouterr().out
    assert main(["pack", "--verify", str(packed)]) == 0
    assert "all 20 shards match" in capsys.readouterr().out


def test_files_that_cannot_be_packed_are_left_out_and_named(make_imagefolder, tmp_path, caplog):
    data = make_imagefolder(tmp_path / "data", 3, [2, 1])
    (data / "train" / "class_0" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(data / "train" / "class_0" / "pipe.jpg")  # read, it would wait for ever
    (data / "train" / "class_1" / "notes.txt").write_text("not an image")
    (data / "val" / "class_1" / "0.png").unlink()
    (data / "val" / "class_1" / "lost.png").symlink_to(tmp_path / "nowhere.png")
    caplog.set_level(logging.WARNING, logger="twins.data.packed.writer")
    report = pack(data, str(tmp_path / "out"), workers=1)
    assert report.samples == {"train": 6, "val": 2}
    said = caplog.text
    assert "left out 2 image names that are no readable file" in said
    assert "train/class_0/gone.png, train/class_0/pipe.jpg" in said
    assert "1 file not an image left out (e.g. train/class_1/notes.txt)" in said
    assert f"no image of class class_1 in {data / 'val'} can be packed" in said


def test_training_skips_and_counts_a_fifo_named_like_an_image(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / "data", 2, [1, 1])
    os.mkfifo(data / "train" / "class_0" / "pipe.png")
    folder = SafeImageFolder(data / "train")
    index = [path for path, _ in folder.samples].index(str(data / "train/class_0/pipe.png"))
    assert folder[index] is None  # at once: unreadable, not a wait
