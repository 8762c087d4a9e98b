"""build_datasets: ImageFolder splits, class checks, and the one-line errors for bad layouts."""

import shutil

import pytest
import torch

from twins.errors import TwinsError
from twins.tasks.classify.data import build_datasets


def test_builds_train_and_val_with_sorted_class_names(make_config, image_folder):
    train, val, names = build_datasets(make_config(data_url=str(image_folder)))
    assert names == ["cat", "dog"]
    assert (len(train), len(val)) == (12, 12)
    (image, erasing), label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 0
    assert erasing.shape == (1, 5)  # re_count rectangles: top, left, height, width, noise seed
    assert val[11][1] == 1


def test_hidden_folders_are_not_classes(make_config, image_folder):
    shutil.copytree(image_folder / "train" / "cat", image_folder / "train" / ".ipynb_checkpoints")
    _, _, names = build_datasets(make_config(data_url=str(image_folder)))
    assert names == ["cat", "dog"]


def test_missing_folder_names_the_path_and_the_layout(make_config, tmp_path):
    with pytest.raises(TwinsError) as error:
        build_datasets(make_config(data_url=str(tmp_path / "nowhere")))
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "train") in message
    assert "<class>/<image>" in message and "\n" not in message


def test_missing_val_split_is_refused(make_config, image_folder):
    shutil.rmtree(image_folder / "val")
    with pytest.raises(TwinsError, match="val not found"):
        build_datasets(make_config(data_url=str(image_folder)))


def test_class_count_must_match_num_classes(make_config, image_folder):
    with pytest.raises(TwinsError, match="has 2 class folders but num_classes is 10"):
        build_datasets(make_config(data_url=str(image_folder), num_classes=10))


def test_train_and_val_classes_must_agree(make_config, image_folder):
    (image_folder / "val" / "dog").rename(image_folder / "val" / "bird")
    with pytest.raises(TwinsError, match="only in train: dog; only in val: bird"):
        build_datasets(make_config(data_url=str(image_folder)))


def test_empty_class_folder_is_refused_in_one_line(make_config, image_folder):
    for image in (image_folder / "train" / "dog").iterdir():
        image.unlink()
    with pytest.raises(TwinsError) as error:
        build_datasets(make_config(data_url=str(image_folder)))
    assert "dog" in str(error.value) and "\n" not in str(error.value)


def test_split_without_class_folders_is_refused(make_config, image_folder):
    shutil.rmtree(image_folder / "val")
    (image_folder / "val").mkdir()
    with pytest.raises(TwinsError, match="no class folders"):
        build_datasets(make_config(data_url=str(image_folder)))


def test_folder_links_inside_class_folders_are_not_followed(make_config, image_folder, caplog):
    """`train/cat/up -> ..` would read every image of train/ again as a cat, and again through
    each level of the loop (torchvision follows links); it is skipped with a warning."""
    train = image_folder / "train"
    (train / "cat" / "up").symlink_to("..", target_is_directory=True)
    (train / "dog" / "cats").symlink_to(train / "cat", target_is_directory=True)
    (train / "dog" / "real").mkdir()
    shutil.copy(train / "dog" / "0.png", train / "dog" / "real" / "extra.png")
    with caplog.at_level("WARNING", logger="twins.tasks.classify.data"):
        train_set, _, _ = build_datasets(make_config(data_url=str(image_folder)))
    assert len(train_set) == 13  # 6 cats, 6 dogs and the one in a real sub-folder
    assert [label for _, label in train_set.samples].count(0) == 6
    warnings = [r.getMessage() for r in caplog.records if "not following folder link" in r.message]
    assert len(warnings) == 2 and "\n" not in warnings[0]
    assert any(str(train / "cat" / "up") in w for w in warnings)


def test_a_class_folder_that_is_a_link_is_read(make_config, image_folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(image_folder / "train" / "dog", elsewhere)
    (image_folder / "train" / "dog").symlink_to(elsewhere, target_is_directory=True)
    train_set, _, names = build_datasets(make_config(data_url=str(image_folder)))
    assert names == ["cat", "dog"] and len(train_set) == 12
