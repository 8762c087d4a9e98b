"""A Parquet set in the Hub's layout found and checked at start: splits by the Hub's file
names, class names from the ClassLabel, classes.json or the labels, and bad files refused in
one line naming the file and the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hub_parquet import imagefolder_to_parquet, write_parquet_file
from twins.data.parquet.layout import find_files, is_parquet_set, read_layout
from twins.errors import TwinsError


@pytest.fixture(scope="module")
def parquet_set(imagefolder, tmp_path_factory) -> Path:
    return imagefolder_to_parquet(imagefolder, tmp_path_factory.mktemp("hub"))


def png(tmp_path: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "x.png")
    return (tmp_path / "x.png").read_bytes()


def test_splits_rows_and_classes_of_the_hub_layout(parquet_set, imagefolder):
    layout = read_layout(str(parquet_set))
    assert layout.classes == sorted(p.name for p in (imagefolder / "train").iterdir())
    assert [i.name for i in layout.splits["train"]] == [
        f"train-0000{n}-of-00003.parquet" for n in range(3)
    ]
    assert sum(sum(i.row_groups) for i in layout.splits["train"]) == 64
    assert sum(len(i.labels) for i in layout.splits["val"]) == 14
    assert layout.splits["train"][0].row_groups == (5, 5, 5, 5, 2)  # 22 rows, groups of 5
    assert is_parquet_set(str(parquet_set)) and not is_parquet_set(str(imagefolder))


@pytest.mark.parametrize("word,split", [("validation", "val"), ("val", "val"), ("test", "test")])
def test_the_hub_split_names_are_recognised(tmp_path, word, split):
    write_parquet_file(tmp_path / "data" / f"{word}-00000-of-00001.parquet", [], ["a"])
    (tmp_path / "data" / "README.md").write_text("not a split")
    assert find_files(str(tmp_path)) == {split: [f"{word}-00000-of-00001.parquet"]}


def test_a_test_split_is_named_and_not_read(parquet_set, tmp_path, caplog):
    data = tmp_path / "set"
    (data / "data").mkdir(parents=True)
    for path in (parquet_set / "data").iterdir():
        (data / "data" / path.name).write_bytes(path.read_bytes())
    write_parquet_file(data / "data" / "test-00000-of-00001.parquet", [], None)
    with caplog.at_level(logging.WARNING, logger="twins.notes"):
        layout = read_layout(str(data))
    assert set(layout.splits) == {"train", "val"}
    assert "1 data/test-*.parquet files are not read (training and evaluation read" in caplog.text


def test_class_names_from_classes_json_else_the_label_integers(tmp_path, caplog):
    image = png(tmp_path)
    for split in ("train", "validation"):
        rows = [(image, "x.png", 0), (image, "y.png", 2)]
        write_parquet_file(
            tmp_path / "set" / "data" / f"{split}-00000-of-00001.parquet", rows, None
        )
    with caplog.at_level(logging.WARNING, logger="twins.notes"):
        assert read_layout(str(tmp_path / "set")).classes == ["0", "1", "2"]
    assert "the classes are the labels 0..2; write classes.json" in caplog.text
    (tmp_path / "set" / "classes.json").write_text(json.dumps(["cat", "dog", "fox"]))
    assert read_layout(str(tmp_path / "set")).classes == ["cat", "dog", "fox"]


def test_a_file_without_an_image_column_is_refused_naming_it(tmp_path):
    folder = tmp_path / "set" / "data"
    folder.mkdir(parents=True)
    write_parquet_file(folder / "validation-00000-of-00001.parquet", [], ["a"])
    table = pa.table({"img": [b"x"], "label": pa.array([0], pa.int64())})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    with pytest.raises(TwinsError) as raised:
        read_layout(str(tmp_path / "set"))
    message = str(raised.value)
    assert "train-00000-of-00001.parquet has no `image` column" in message
    assert "(its columns: img, label)" in message and "\n" not in message


def test_labels_out_of_range_are_refused_naming_the_file_and_row(tmp_path):
    image = png(tmp_path)
    folder = tmp_path / "set" / "data"
    write_parquet_file(folder / "train-00000-of-00001.parquet", [(image, "a", 0)], ["a", "b"])
    rows = [(image, "a", 1), (image, "b", 2), (image, "c", -1)]
    write_parquet_file(folder / "validation-00000-of-00001.parquet", rows, ["a", "b"])
    with pytest.raises(TwinsError) as raised:
        read_layout(str(tmp_path / "set"))
    assert str(raised.value).startswith(
        f"{folder}/validation-00000-of-00001.parquet has label 2 at row 1 (2 rows out of "
        "range), outside the 2 classes 0..1: fix those labels"
    )


def test_a_missing_validation_split_is_refused_naming_the_hub_file_name(parquet_set, tmp_path):
    (tmp_path / "data").mkdir()
    for path in (parquet_set / "data").glob("train-*"):
        (tmp_path / "data" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(
        TwinsError, match=r"holds no data/validation-\*\.parquet \(found: train-\*\)"
    ):
        read_layout(str(tmp_path))
