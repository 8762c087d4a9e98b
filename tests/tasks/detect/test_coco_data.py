"""COCO-format data: layouts, targets, label mapping, and what is counted and skipped."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import ExifTags, Image
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from coco_files import annotation, polygon, write_image
from twins.errors import TwinsError
from twins.tasks.detect.data import (
    CROWD_ONLY,
    EMPTY_POLYGON,
    MALFORMED_BOX,
    MALFORMED_RLE,
    NO_ANNOTATIONS,
    OUTSIDE,
    TOO_SMALL,
    UNKNOWN_CATEGORY,
    CategoryMap,
    CocoDataset,
    coco_split_paths,
    open_coco_split,
)
from twins.tasks.detect.transforms import train_transform_1x, train_transform_3x


def test_labels_follow_the_sorted_category_ids_and_map_back():
    categories = CategoryMap(
        [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}, {"id": 90, "name": "c"}]
    )
    assert categories.category_ids == [3, 7, 90] and categories.names == ["a", "b", "c"]
    assert [categories.label(i) for i in (3, 7, 90)] == [1, 2, 3]
    assert all(categories.category_id(categories.label(i)) == i for i in (3, 7, 90))
    with pytest.raises(ValueError):
        categories.category_id(0)  # background has no category


def test_both_layouts_are_found_and_a_missing_one_is_named(tmp_path, coco_train):
    assert coco_split_paths(coco_train, "train") == (
        coco_train / "train",
        coco_train / "annotations" / "instances_train.json",
    )
    (tmp_path / "release" / "annotations").mkdir(parents=True)
    (tmp_path / "release" / "val2017").mkdir()
    (tmp_path / "release" / "annotations" / "instances_val2017.json").write_text("{}")
    assert coco_split_paths(tmp_path / "release", "val")[0].name == "val2017"
    with pytest.raises(TwinsError, match="instances_val2017.json") as error:
        coco_split_paths(coco_train, "val")
    assert error.value.argument == "data_url"


def test_training_targets_boxes_polygons_rles_without_crowd(coco_train):
    data = open_coco_split(coco_train, "train", with_masks=True)
    image, target = data[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert image.shape == (3, 48, 64) and target["orig_size"] == (48, 64)
    assert target["image_id"] == 1
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].canvas_size == (48, 64)
    # xywh -> xyxy; the crowd region is left out; the last box is clipped to the image.
    assert target["boxes"].tolist() == [[4, 6, 24, 22], [30, 20, 54, 40], [56, 40, 64, 48]]
    assert target["labels"].tolist() == [1, 2, 3]  # category ids 3, 7, 11
    masks = target["masks"]
    assert isinstance(masks, tv_tensors.Mask) and masks.shape == (3, 48, 64)
    # The RLE is exact; pycocotools rasterises a polygon's edges within a pixel.
    assert int(masks[1].sum()) == 24 * 20
    assert torch.allclose(masks_to_boxes(masks), target["boxes"].as_subclass(torch.Tensor), atol=1)
    assert data.crowd_annotations == 1


def test_bad_annotations_are_counted_and_named_never_raised(coco_train, caplog):
    with caplog.at_level(logging.WARNING):
        data = open_coco_split(coco_train, "train", with_masks=True)
    assert data.skipped_annotations == {
        OUTSIDE: 1,
        TOO_SMALL: 1,
        UNKNOWN_CATEGORY: 1,
        EMPTY_POLYGON: 2,
        MALFORMED_RLE: 1,
        MALFORMED_BOX: 1,
    }
    warning = next(r.getMessage() for r in caplog.records if "b.png" in r.getMessage())
    assert "skipping 7 annotations" in warning
    assert all(reason in warning for reason in (OUTSIDE, UNKNOWN_CATEGORY, EMPTY_POLYGON))
    assert any("skipped 7 of 13 annotations" in r.getMessage() for r in caplog.records)
    # Training drops the image left without targets (b.png) and the one without any (c.png).
    assert [data.file_name(i).rsplit("/", 1)[1] for i in range(len(data))] == [
        "a.png",
        "broken.png",
        "d.png",
    ]
    assert data.dropped_images == 2


def test_masks_off_checks_boxes_only(coco_train):
    data = open_coco_split(coco_train, "train")
    assert data.skipped_annotations == {
        OUTSIDE: 1,
        TOO_SMALL: 1,
        UNKNOWN_CATEGORY: 1,
        MALFORMED_BOX: 1,
    }
    assert "masks" not in data[0][1]
    # b.png keeps the three annotations whose boxes are good.
    assert len(data) == 4 and len(data[1][1]["boxes"]) == 3


def test_evaluation_keeps_every_image_and_every_scorable_annotation(coco_train):
    data = CocoDataset(
        coco_train / "train",
        coco_train / "annotations" / "instances_train.json",
        with_masks=True,
        drop_empty=False,
    )
    assert len(data) == 5
    image, target = data[2]  # c.png: no annotation
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 32, 32)
    # The ground truth keeps the crowd region and the boxes outside or under a pixel, as COCO;
    # it drops what COCOeval cannot score.
    assert sorted(data.coco.getAnnIds()) == [1, 2, 3, 4, 5, 6, 12, 13]
    assert data.coco.anns[3]["iscrowd"] == 1


def test_broken_and_resized_images_are_skipped_and_counted(coco_train, caplog):
    data = open_coco_split(coco_train, "train")
    with caplog.at_level(logging.WARNING):
        samples = [data[i] for i in range(len(data))] + [data[2]]
    assert [s is None for s in samples] == [False, False, True, True, True]
    assert (data.tried, data.skipped) == (5, 3)
    assert [name.rsplit("/", 1)[1] for name in data.broken_files] == ["broken.png", "d.png"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "broken.png" in messages and "differs from the annotation file's 40x40" in messages
    assert messages.count("d.png") == 1  # named once, though read twice


def test_missing_annotation_fields_are_filled_for_cocoeval(tmp_path, coco_train):
    path = coco_train / "annotations" / "instances_train.json"
    content = json.loads(path.read_text())
    for entry in content["annotations"]:
        for key in ("id", "area", "iscrowd"):
            entry.pop(key)
    own = tmp_path / "own.json"
    own.write_text(json.dumps(content))
    data = CocoDataset(coco_train / "train", own)
    anns = data.coco.dataset["annotations"]
    assert len({a["id"] for a in anns}) == len(anns)
    assert all("area" in a and a["iscrowd"] == 0 for a in anns)
    assert len(data[0][1]["boxes"]) == 4  # with iscrowd gone, the crowd region is an object


def test_a_file_that_is_not_coco_is_one_clear_error(tmp_path, coco_train):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(TwinsError, match="no annotations, categories list"):
        CocoDataset(coco_train / "train", bad)
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    with pytest.raises(TwinsError, match="lacks file_name, height, id, width"):
        CocoDataset(coco_train / "train", bad)
    bad.write_text("{not json")
    with pytest.raises(TwinsError, match="not readable JSON"):
        CocoDataset(coco_train / "train", bad)


def _rewrite(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_left_out_images_and_orphan_annotations_are_counted_and_said(coco_train, caplog):
    """b.png (only bad annotations) and c.png (none) are left out of training, e.png has a
    crowd region only, and one annotation names an image_id the file does not list."""
    write_image(coco_train / "train" / "e.png", 32, 32, [])

    def change(content):
        content["images"].append({"id": 6, "file_name": "e.png", "width": 32, "height": 32})
        content["annotations"] += [
            annotation(14, 6, 3, [2, 2, 10, 10], iscrowd=1, segmentation=polygon(2, 2, 10, 10)),
            annotation(15, 99, 3, [2, 2, 10, 10], segmentation=polygon(2, 2, 10, 10)),
        ]

    _rewrite(coco_train / "annotations" / "instances_train.json", change)
    with caplog.at_level(logging.WARNING):
        data = open_coco_split(coco_train, "train", with_masks=True)
    assert data.left_out_images == {NO_ANNOTATIONS: ["b.png", "c.png"], CROWD_ONLY: ["e.png"]}
    assert (data.crowd_annotations, data.orphan_annotations, data.dropped_images) == (2, 1, 3)
    summary = data.summary()
    assert "2 image(s) without a usable annotation left out (e.g. b.png, c.png)" in summary
    assert "1 image(s) with crowd regions only left out (e.g. e.png)" in summary
    assert "2 crowd annotation(s) not trained on" in summary
    assert "1 annotation(s) whose image_id is not in its images left out" in summary
    assert any(summary in r.getMessage() for r in caplog.records)
    # Evaluation keeps every image: only the annotation of no image is left out.
    val = CocoDataset(coco_train / "train", data.annotation_file, drop_empty=False)
    assert val.summary() == "1 annotation(s) whose image_id is not in its images left out"


@pytest.mark.parametrize(
    ("key", "duplicate", "complaint"),
    [
        ("images", {"id": 2, "file_name": "twin.png", "width": 8, "height": 8}, "share the id 2"),
        ("categories", {"id": 7, "name": "cube"}, "share the id 7"),
        ("categories", {"id": 12, "name": "circle"}, "share the name 'circle'"),
    ],
)
def test_duplicate_ids_and_names_are_refused_naming_both(coco_train, key, duplicate, complaint):
    path = coco_train / "annotations" / "instances_train.json"
    _rewrite(path, lambda content: content[key].append(duplicate))
    with pytest.raises(TwinsError, match=complaint) as raised:
        CocoDataset(coco_train / "train", path)
    message = str(raised.value)
    field = "name" if "name" in complaint else "id"
    entries = json.loads(path.read_text())[key]
    first = next(e for e in entries if e.get(field) == duplicate[field])
    assert json.dumps(first)[:60] in message and json.dumps(duplicate)[:60] in message
    assert "\n" not in message


def test_an_empty_category_list_says_so(coco_train):
    path = coco_train / "annotations" / "instances_train.json"
    _rewrite(path, lambda content: content.update(categories=[]))
    with pytest.raises(TwinsError, match="lists no categories") as raised:
        CocoDataset(coco_train / "train", path)
    assert "num_classes" not in str(raised.value)


def test_a_zero_width_box_inside_the_image_is_too_small_not_outside(coco_train):
    path = coco_train / "annotations" / "instances_train.json"
    _rewrite(
        path,
        lambda content: content.update(annotations=[annotation(1, 1, 3, [10, 10, 0, 12])]),
    )
    data = CocoDataset(coco_train / "train", path)
    assert data.skipped_annotations == {TOO_SMALL: 1}


def test_an_exif_turned_image_of_the_stored_size_says_exif_is_why(coco_train, caplog):
    """A camera's JPEG stored 40 x 20 with orientation 6 is read upright, 20 x 40; the
    annotation file gives the stored size."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.new("RGB", (40, 20), (90, 90, 90)).save(coco_train / "train" / "a.png", exif=exif)
    path = coco_train / "annotations" / "instances_train.json"
    _rewrite(
        path,
        lambda content: content["images"][0].update(file_name="a.png", width=40, height=20),
    )
    data = CocoDataset(coco_train / "train", path, drop_empty=False)
    with caplog.at_level(logging.WARNING):
        assert data[0] is None
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "a.png" in message and "EXIF orientation turns it a quarter" in message
    # d.png's size is simply wrong: nothing is said of EXIF.
    with caplog.at_level(logging.WARNING):
        assert data[4] is None
    assert "EXIF" not in caplog.records[-1].getMessage()


def test_an_empty_file_is_named_and_called_empty(coco_train, caplog):
    (coco_train / "train" / "c.png").write_bytes(b"")
    data = CocoDataset(coco_train / "train", coco_train / "annotations" / "instances_train.json")
    with caplog.at_level(logging.WARNING):
        assert data[2] is None and data[3] is None  # c.png empty, broken.png not an image
    messages = [r.getMessage() for r in caplog.records]
    assert any("c.png" in m and "the file is empty (0 bytes)" in m for m in messages)
    assert any("broken.png" in m and "not an image file" in m for m in messages)
    assert not any("BytesIO" in m for m in messages)


@pytest.mark.parametrize("policy", ["1x", "3x"])
def test_a_2000_by_1_image_trains_at_one_row(coco_train, policy):
    Image.new("RGB", (2000, 1), (90, 90, 90)).save(coco_train / "train" / "line.png")

    def change(content):
        content["images"] = [{"id": 1, "file_name": "line.png", "width": 2000, "height": 1}]
        content["annotations"] = [annotation(1, 1, 3, [100, 0, 400, 1])]

    path = coco_train / "annotations" / "instances_train.json"
    _rewrite(path, change)
    pipeline = train_transform_1x(800, 1333) if policy == "1x" else train_transform_3x()
    data = CocoDataset(coco_train / "train", path, pipeline, drop_empty=True)
    torch.manual_seed(0)
    image, target = data[0]
    if policy == "1x":
        assert tuple(image.shape[-2:]) == (1, 1333)
    else:  # a crop of 384 to 600 columns may be scaled up again: a few rows
        assert 1 <= image.shape[-2] <= 3 and image.shape[-1] <= 1333
    assert data.skipped == 0
