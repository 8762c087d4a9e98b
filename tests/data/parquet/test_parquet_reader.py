"""A Parquet set read by index: the samples the ImageFolder it was made from gives, in any
order, broken rows skipped, counted and named, and the classifier's data built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import twins.data.parquet.reader
from factories import make_config
from hub_parquet import imagefolder_to_parquet, write_parquet_file
from twins.data.folder import SafeImageFolder
from twins.data.parquet.reader import ParquetDataset, open_parquet
from twins.tasks import evaluate_checkpoint, fit
from twins.tasks.classify.data import build_datasets


@pytest.fixture(scope="module")
def parquet_set(imagefolder, tmp_path_factory) -> Path:
    return imagefolder_to_parquet(imagefolder, tmp_path_factory.mktemp("hub"))


def pixels(image) -> np.ndarray:
    """HWC pixels of a decoded image (a CHW uint8 tensor or a PIL image)."""
    return image.permute(1, 2, 0).numpy() if hasattr(image, "permute") else np.asarray(image)


@pytest.mark.parametrize("split", ["train", "val"])
def test_samples_are_those_of_the_image_folder_in_any_order(
    imagefolder, parquet_set, split, monkeypatch
):
    # Room for one row group at a time: every read in a shuffled order reads its group again.
    monkeypatch.setattr(twins.data.parquet.reader, "ROW_GROUP_CACHE_BYTES", 1)
    folder = SafeImageFolder(imagefolder / split)
    data = open_parquet(str(parquet_set), {split: None})[split]
    assert len(data) == len(folder) and data.classes == folder.classes
    assert data.shard_sizes == ([22, 22, 20] if split == "train" else [7, 7])
    order = np.random.default_rng(0).permutation(len(data)).tolist()
    for index in order:
        image, target = data[index]
        expected, expected_target = folder[index]
        assert target == expected_target
        assert np.array_equal(pixels(image), np.asarray(expected))
    assert data.tried == len(data) and data.skipped == 0


def test_broken_rows_are_skipped_counted_and_named(imagefolder, tmp_path, caplog):
    image = next((imagefolder / "train").glob("*/*.png")).read_bytes()
    rows = [(b"not an image", "broken.jpg", 0), (None, "empty.jpg", 1), (image, "good.png", 1)]
    folder = tmp_path / "set" / "data"
    write_parquet_file(folder / "train-00000-of-00001.parquet", rows, ["a", "b"])
    write_parquet_file(folder / "validation-00000-of-00001.parquet", rows[2:], ["a", "b"])
    train = open_parquet(str(tmp_path / "set"), {"train": None})["train"]
    assert train[0] is None and train[1] is None and train[0] is None
    assert train[2][1] == 1
    assert (train.tried, train.skipped) == (4, 3)
    assert train.broken_files == [
        f"{folder}/train-00000-of-00001.parquet row 0 (broken.jpg)",
        f"{folder}/train-00000-of-00001.parquet row 1 (empty.jpg)",
    ]
    assert "the row holds no image bytes" in caplog.text


def test_the_classifier_reads_a_parquet_data_url(parquet_set):
    train, val, classes = build_datasets(
        make_config(data_url=str(parquet_set), num_classes=4, image_size=32)
    )
    assert isinstance(train, ParquetDataset) and isinstance(val, ParquetDataset)
    assert (len(train), len(val), classes) == (64, 14, [f"class_{i}" for i in range(4)])
    assert train.transform is not None and val.transform is not None


def test_eval_on_the_parquet_set_gives_the_folder_s_numbers(imagefolder, parquet_set, tmp_path):
    fit(make_config(data_url=str(parquet_set), train_url=str(tmp_path / "run"), epochs=1))
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    on_folder = evaluate_checkpoint(make_config(data_url=str(imagefolder)), best)
    on_parquet = evaluate_checkpoint(make_config(data_url=str(parquet_set)), best)
    assert on_parquet["images"] == on_folder["images"] == 14
    assert on_parquet["top1"] == on_folder["top1"]
    assert on_parquet["loss"] == pytest.approx(on_folder["loss"], rel=1e-6)
