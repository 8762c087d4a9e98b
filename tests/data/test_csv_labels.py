"""`twins.data.csv_labels`: images labelled by `train.csv` / `val.csv` (`path,label`), read as
the class folders are, and the one-line refusals of a bad CSV."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from twins.errors import TwinsError
from twins.tasks.classify.data import build_datasets


def write_csv(path: Path, rows: list[tuple[str, str]], header=("path", "label")) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def csv_labels(image_folder: Path, integers: bool = False) -> Path:
    """train.csv and val.csv beside the class folders, listing their images."""
    for split in ("train", "val"):
        images = sorted((image_folder / split).glob("*/*.png"))
        classes = sorted({image.parent.name for image in images})
        rows = [
            (
                image.relative_to(image_folder).as_posix(),
                str(classes.index(image.parent.name)) if integers else image.parent.name,
            )
            for image in images
        ]
        write_csv(image_folder / f"{split}.csv", rows[::-1])  # any row order
    return image_folder


def test_csv_labels_read_as_the_class_folders_they_list(make_config, image_folder):
    folders = build_datasets(make_config(data_url=str(image_folder)))
    labelled = build_datasets(make_config(data_url=str(csv_labels(image_folder))))
    assert labelled[2] == folders[2] == ["cat", "dog"]
    for by_csv, by_folder in zip(labelled[:2], folders[:2], strict=True):
        assert sorted(by_csv.samples) == sorted(by_folder.samples)
    (image, _), label = labelled[0][0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
    assert labelled[1].sample_keys()[0].startswith("val/")


def test_integer_labels_are_the_class_indices(make_config, image_folder):
    train, val, names = build_datasets(
        make_config(data_url=str(csv_labels(image_folder, integers=True)))
    )
    assert names == ["0", "1"]
    assert sorted(train.targets) == [0] * 6 + [1] * 6
    write_csv(image_folder / "val.csv", [("val/dog/0.png", "001")])  # leading zeros: class 1
    _, val, _ = build_datasets(make_config(data_url=str(image_folder)))
    assert val.targets == [1]


def test_a_row_naming_a_missing_file_is_refused_in_one_line(make_config, image_folder):
    csv_labels(image_folder)
    rows = list(csv.reader((image_folder / "train.csv").read_text().splitlines()))
    rows[3][0] = "train/cat/nope.png"
    write_csv(image_folder / "train.csv", [tuple(row) for row in rows[1:]])
    with pytest.raises(TwinsError) as error:
        build_datasets(make_config(data_url=str(image_folder)))
    message = str(error.value)
    assert f"{image_folder / 'train.csv'} row 4: train/cat/nope.png not found" in message
    assert "fix the path or delete the row" in message and "\n" not in message


def test_a_broken_image_is_skipped_and_counted_as_in_class_folders(make_config, image_folder):
    csv_labels(image_folder)
    (image_folder / "train" / "cat" / "0.png").write_bytes(b"not a png")
    train, _, _ = build_datasets(make_config(data_url=str(image_folder)))
    samples = [train[index] for index in range(len(train))]
    assert sum(sample is None for sample in samples) == 1
    assert (train.tried, train.skipped) == (12, 1)
    assert train.broken_files == [str(image_folder / "train" / "cat" / "0.png")]


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        ([("train/cat/0.png", "cat")], None, "not the header row 'path,label'"),
        ([("train/cat/0.png", "")], ("path", "label"), "row 2: 'train/cat/0.png,' is not"),
        ([("train/cat/0.png", "cat", "x")], ("path", "label"), "row 2:"),
        ([], ("path", "label"), "lists no images"),
    ],
)
def test_a_malformed_csv_is_refused_in_one_line(make_config, image_folder, rows, header, expected):
    csv_labels(image_folder)
    write_csv(image_folder / "train.csv", rows, header=header)
    with pytest.raises(TwinsError, match=expected) as error:
        build_datasets(make_config(data_url=str(image_folder)))
    assert "\n" not in str(error.value)


def test_a_val_label_unknown_to_train_csv_is_refused(make_config, image_folder):
    csv_labels(image_folder)
    write_csv(image_folder / "val.csv", [("val/cat/0.png", "cat"), ("val/dog/0.png", "wolf")])
    with pytest.raises(TwinsError, match=r"val.csv row 3: label 'wolf' is not a class of"):
        build_datasets(make_config(data_url=str(image_folder)))


def test_without_val_csv_the_error_points_to_val_split(make_config, image_folder):
    csv_labels(image_folder)
    (image_folder / "val.csv").unlink()
    shutil.rmtree(image_folder / "val")
    with pytest.raises(TwinsError, match="no val.csv: add it, or set val_split"):
        build_datasets(make_config(data_url=str(image_folder)))
