"""Segmentation folders: the ADE20K layout and one's own data with classes.json, read from tiny
files written here; label values, broken pairs skipped and counted, missing folders named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from twins.errors import TwinsError
from twins.tasks.segment.ade20k import ADE20K_CLASSES, ADE20K_PALETTE, display_name
from twins.tasks.segment.data import (
    LabelValueError,
    decode_label,
    open_segmentation,
    read_class_list,
    reduce_zero_label,
)
from twins.tasks.segment.transforms import SegTrainTransform
from twins.train.sample_seeds import SampleSeededDataset


def write_pair(root: Path, split: str, stem: str, label: np.ndarray, size=None) -> None:
    """An RGB JPEG and its label PNG (of the label's size unless `size` (w, h) says another)."""
    height, width = label.shape
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "images" / split / f"{stem}.jpg")
    image = Image.fromarray(label)
    if size is not None:
        image = image.resize(size, Image.Resampling.NEAREST)
    image.save(root / "annotations" / split / f"{stem}.png")


def test_ade20k_labels_are_reduced_as_mmseg_reduces_them(tmp_path):
    label = np.array([[0, 1, 2, 150], [255, 3, 0, 1]], dtype=np.uint8)
    write_pair(tmp_path, "training", "a", label)
    data = open_segmentation(tmp_path, "train")
    assert data.classes == list(ADE20K_CLASSES) and len(data) == 1
    image, target = data[0]
    assert image.shape == (3, 2, 4) and image.dtype == torch.uint8
    assert target.tolist() == [[255, 0, 1, 149], [255, 2, 255, 0]]


def test_reduce_zero_label_keeps_the_ignore_index():
    label = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    assert reduce_zero_label(label).tolist() == [255, 0, 253, 255]


def test_own_classes_are_read_unchanged_with_palette_indices(tmp_path):
    spec = {"classes": ["background", "cat", "dog"], "palette": [[0, 0, 0], [9, 9, 9], [7, 7, 7]]}
    (tmp_path / "classes.json").write_text(json.dumps(spec))
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    (tmp_path / "images" / "validation").mkdir(parents=True)
    (tmp_path / "annotations" / "validation").mkdir(parents=True)
    Image.new("RGB", (2, 2), (10, 20, 30)).save(tmp_path / "images/validation/x.png")
    indexed = Image.fromarray(label, mode="P")
    indexed.putpalette([200] * 768)  # colours that are not the class values
    indexed.save(tmp_path / "annotations/validation/x.png")
    data = open_segmentation(tmp_path, "validation")
    assert data.classes == ["background", "cat", "dog"]
    assert data.class_list.palette[2] == (7, 7, 7) and not data.class_list.reduce_zero_label
    assert data[0][1].tolist() == [[0, 1], [2, 255]]


def test_broken_images_and_wrong_size_labels_are_skipped_and_counted(tmp_path):
    label = np.ones((6, 8), dtype=np.uint8)
    for stem in ("a", "b", "c", "d"):
        write_pair(tmp_path, "training", stem, label)
    (tmp_path / "images/training/b.jpg").write_bytes(b"not a jpeg")
    write_pair(tmp_path, "training", "c", label, size=(9, 6))  # label one column wider
    (tmp_path / "annotations/training/d.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "images/training/notes.txt").write_text("x")
    (tmp_path / "images/training/e.jpg").write_bytes(
        (tmp_path / "images/training/a.jpg").read_bytes()
    )
    data = open_segmentation(tmp_path, "train")
    assert len(data) == 4
    assert data.left_out == [str(tmp_path / "images/training/notes.txt")]
    assert data.unlabelled == [str(tmp_path / "images/training/e.jpg")]
    samples = [data[i] for i in range(len(data))]
    assert samples[0] is not None and samples[1:] == [None, None, None]
    assert (data.tried, data.skipped) == (4, 3)
    assert sorted(Path(p).stem for p in data.broken_files) == ["b", "c", "d"]
    [data[i] for i in range(len(data))]  # a second epoch counts again, names each once
    assert (data.tried, data.skipped, len(data.broken_files)) == (8, 6, 3)
    with pytest.raises(TwinsError, match="could not be decoded"):
        data.check_health()


def test_transform_receives_image_and_label(tmp_path):
    write_pair(tmp_path, "training", "a", np.full((4, 4), 3, dtype=np.uint8))
    data = open_segmentation(tmp_path, "train", transform=lambda im, lab: (im.sum(), lab + 1))
    image, label = data[0]
    assert int(label[0, 0]) == 3  # 3 reduced to 2, plus 1


def test_missing_folder_is_one_line_naming_the_layout(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    with pytest.raises(TwinsError) as error:
        open_segmentation(tmp_path, "train")
    message = str(error.value)
    assert "annotations/training" in message and "\n" not in message
    assert error.value.argument == "data_url"


def test_bad_class_list_is_named(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a"], "palette": [[1, 2]]}))
    with pytest.raises(TwinsError, match="classes.json is not a class list"):
        read_class_list(tmp_path)


def test_ade20k_names_and_palette_are_mmsegs():
    # Digests of the 150 `IoU.<class>` key names of the released UperNet PCPVT-S log, in its
    # order, and of mmsegmentation's ADE20K palette.
    names = hashlib.sha256("|".join(ADE20K_CLASSES).encode()).hexdigest()
    assert names == "ca03f1c72e54e7d1a8ec5361ae9a29228bc43ec72165ef4b2318df5a668f0957"
    palette = hashlib.sha256(json.dumps(ADE20K_PALETTE).encode()).hexdigest()
    assert palette == "5ab25d7f9334ae4735301e2f135a7f9d079e399d5bc961957b6d02c9128c6527"
    assert len(set(ADE20K_CLASSES)) == 150 and ADE20K_CLASSES[:3] == ("wall", "building", "sky")
    assert ADE20K_CLASSES[7] == "bed " and display_name(ADE20K_CLASSES[7]) == "bed"
    assert len(ADE20K_PALETTE) == 150 and ADE20K_PALETTE[-1] == (92, 0, 255)


def test_training_samples_depend_on_seed_epoch_and_index_through_the_engine_seeding(tmp_path):
    for stem in ("a", "b"):
        write_pair(tmp_path, "training", stem, np.arange(48, dtype=np.uint8).reshape(6, 8) % 5)
    transform = SegTrainTransform(img_scale=(32, 8), crop_size=(8, 8))
    data = SampleSeededDataset(open_segmentation(tmp_path, "train", transform), seed=0)
    first = data[1]
    assert first[0].shape == (3, 8, 8) and torch.equal(data[1][0], first[0])
    data.set_epoch(1)
    assert not torch.equal(data[1][0], first[0])


def palette_png(path: Path, values: np.ndarray, colours: int) -> None:
    """An indexed PNG as Pillow writes one: a palette of `colours` colours (Pillow stores 2 in
    1 bit, up to 4 in 2 bits, up to 16 in 4 bits, more in 8)."""
    image = Image.fromarray(values)
    image.putpalette([(37 * i + c) % 256 for i in range(colours) for c in (0, 80, 160)])
    image.save(path)


@pytest.mark.parametrize(("colours", "bits"), [(2, 1), (3, 2), (4, 2), (16, 4), (17, 8), (256, 8)])
def test_palette_labels_read_as_pillow_reads_them_at_every_bit_depth(tmp_path, colours, bits):
    values = np.random.default_rng(colours).integers(0, colours, (7, 13), dtype=np.uint8)
    palette_png(tmp_path / "label.png", values, colours)
    data = (tmp_path / "label.png").read_bytes()
    assert data[24] == bits  # the IHDR bit depth Pillow chose
    pillow = np.asarray(Image.open(tmp_path / "label.png"))
    assert np.array_equal(pillow, values)
    assert np.array_equal(decode_label(data).numpy(), pillow)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_greyscale_labels_read_as_pillow_reads_them(tmp_path, bits):
    levels = np.random.default_rng(bits).integers(0, 4, (5, 9), dtype=np.uint8) * 85
    Image.fromarray(levels).save(tmp_path / "grey.png", bits=bits)
    data = (tmp_path / "grey.png").read_bytes()
    assert data[24] == bits
    pillow = np.asarray(Image.open(tmp_path / "grey.png"))
    assert np.array_equal(decode_label(data).numpy(), pillow)


def test_a_16_bit_label_reads_its_values(tmp_path):
    values = np.random.default_rng(0).integers(0, 300, (5, 9)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    label = decode_label((tmp_path / "deep.png").read_bytes())
    assert label.dtype == torch.int32 and np.array_equal(label.numpy(), values)


def _own_data(root: Path, classes: list[str], reduce: bool = False) -> None:
    spec = {"classes": classes, "reduce_zero_label": reduce}
    (root / "classes.json").write_text(json.dumps(spec))


def test_a_boolean_mask_is_classes_0_and_1_not_the_ignore_index(tmp_path):
    _own_data(tmp_path, ["background", "object"])
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:5, 3:7] = True
    write_pair(tmp_path, "validation", "a", mask.astype(np.uint8))
    Image.fromarray(mask).save(tmp_path / "annotations/validation/a.png")  # 1-bit, as users do
    assert (tmp_path / "annotations/validation/a.png").read_bytes()[24] == 1
    label = open_segmentation(tmp_path, "validation")[0][1]
    assert np.array_equal(label.numpy(), mask.astype(np.uint8))


def test_a_4_bit_palette_label_reads_the_same_every_time(tmp_path):
    _own_data(tmp_path, [f"c{i}" for i in range(12)])
    values = np.random.default_rng(3).integers(0, 12, (40, 50), dtype=np.uint8)
    write_pair(tmp_path, "training", "a", values)
    palette_png(tmp_path / "annotations/training/a.png", values, 12)
    data = open_segmentation(tmp_path, "train")
    reads = [data[0][1].numpy() for _ in range(3)]
    assert all(np.array_equal(read, values) for read in reads)


def test_colour_labels_are_skipped_saying_to_convert_them(tmp_path, caplog):
    _own_data(tmp_path, ["a", "b"])
    write_pair(tmp_path, "training", "a", np.zeros((4, 4), dtype=np.uint8))
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "annotations/training/a.png")
    data = open_segmentation(tmp_path, "train")
    assert data[0] is None and data.skipped == 1
    assert "convert colour masks to class indices" in caplog.text


@pytest.mark.parametrize("reduce", [False, True])
def test_a_label_value_that_is_no_class_is_refused_naming_file_and_value(tmp_path, reduce):
    _own_data(tmp_path, ["background", "cat", "dog"], reduce=reduce)
    label = np.ones((4, 6), dtype=np.uint8)
    label[1, 2], label[0, 0] = 39, 255  # 255 is ignored, 39 is no class
    write_pair(tmp_path, "validation", "a", label)
    data = open_segmentation(tmp_path, "validation")
    with pytest.raises(LabelValueError) as error:
        data[0]
    message = str(error.value)
    assert str(tmp_path / "annotations/validation/a.png") in message and "39" in message
    assert "\n" not in message and "255" not in message.split("(")[0]
    assert data.skipped == 0  # refused, not skipped as a broken file


def test_the_largest_class_value_and_the_ignore_index_pass(tmp_path):
    _own_data(tmp_path, ["background", "cat", "dog"], reduce=True)
    write_pair(tmp_path, "validation", "a", np.array([[0, 3, 255, 1]], dtype=np.uint8))
    assert open_segmentation(tmp_path, "validation")[0][1].tolist() == [[255, 2, 255, 0]]
