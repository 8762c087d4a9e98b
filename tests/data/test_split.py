"""`twins.data.split`: `val_split` holds out the same training images wherever the data set is
listed, mounted or packed, for training and for evaluation alike."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from twins.data.packed.writer import pack
from twins.data.split import validation_indices
from twins.errors import TwinsError
from twins.tasks.classify.data import build_datasets
from twins.tasks.classify.evaluate import validation_set


def _held_out(keys, fraction=0.1, seed=0):
    return {keys[index] for index in validation_indices(keys, fraction, seed)}


def test_the_draw_depends_on_the_keys_and_the_seed_not_their_order():
    keys = [f"class_{n % 7}/{n:05d}.jpg" for n in range(1000)]
    shuffled = random.Random(1).sample(keys, len(keys))
    held_out = _held_out(keys)
    assert len(held_out) == 100
    assert _held_out(shuffled) == held_out
    assert _held_out(keys, seed=1) != held_out
    assert len(_held_out(keys[:15], fraction=0.01)) == 1  # at least one image held out


def test_too_few_images_to_split_are_refused():
    with pytest.raises(TwinsError, match="at least 2 training images"):
        validation_indices(["a.jpg"], 0.5, 0)


@pytest.fixture
def train_only(image_folder):
    shutil.rmtree(image_folder / "val")
    return image_folder


def test_a_folder_without_val_is_split_in_two_disjoint_parts(make_config, train_only, tmp_path):
    config = make_config(data_url=str(train_only), val_split=0.25, seed=3)
    train, val, names = build_datasets(config)
    assert names == ["cat", "dog"] and (len(train), len(val)) == (9, 3)
    assert not set(train.indices) & set(val.indices)
    (image, _), _ = train[0]
    assert image.shape == (3, 32, 32)  # the training transform
    assert val[0][0].shape == (3, 32, 32) and val.source.decode.__name__ == "decode_rgb"
    # Mounted elsewhere: the same images held out.
    moved = shutil.copytree(train_only, tmp_path / "elsewhere" / "data")
    _, val_moved, _ = build_datasets(make_config(data_url=str(moved), val_split=0.25, seed=3))
    assert val_moved.indices == val.indices
    # Evaluation (twins eval, and the engine's) reads the same validation part.
    evaluated = validation_set(config, names, 2)
    assert [evaluated.file_name(i) for i in range(len(evaluated))] == [
        val.file_name(i) for i in range(len(val))
    ]


def test_a_packed_set_without_val_holds_out_what_its_folder_does(
    make_config, image_folder, tmp_path
):
    pack(image_folder, str(tmp_path / "packed"), shard_size=4_000, workers=1)
    # Shards without a val split (others' shards indexed in place have none).
    manifest_file = tmp_path / "packed" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["splits"]["val"]
    manifest_file.write_text(json.dumps(manifest))
    train_only = shutil.rmtree(image_folder / "val") or image_folder
    config = make_config(data_url=str(tmp_path / "packed"), val_split=0.25, seed=3)
    train, val, _ = build_datasets(config)
    folder_val = build_datasets(make_config(data_url=str(train_only), val_split=0.25, seed=3))[1]
    assert sorted(val.source.sample_keys()[i] for i in val.indices) == sorted(
        folder_val.source.sample_keys()[i] for i in folder_val.indices
    )
    # The sampler shuffles shards in blocks: each part counts its own samples per shard.
    assert sum(train.shard_sizes) == len(train) and sum(val.shard_sizes) == len(val)
    assert len(train.shard_sizes) == len(train.source.shard_sizes) > 1
    assert not val.source.shuffled  # evaluation reads the shards in stored order


def test_val_split_on_data_with_a_val_part_is_refused(make_config, image_folder):
    with pytest.raises(TwinsError, match="has a validation part of its own") as error:
        build_datasets(make_config(data_url=str(image_folder), val_split=0.05))
    assert "leave val_split out" in str(error.value) and "\n" not in str(error.value)


def test_without_val_split_a_missing_val_folder_points_to_it(make_config, train_only):
    with pytest.raises(TwinsError, match=r"val not found.*or val_split, e\.g\. 0\.05"):
        build_datasets(make_config(data_url=str(train_only)))
