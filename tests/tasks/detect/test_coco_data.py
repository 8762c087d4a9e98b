"""COCO-format data: layouts, targets, label mapping, and what is counted and skipped."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from twins.errors import TwinsError
from twins.tasks.detect.data import (
    EMPTY_POLYGON,
    MALFORMED_BOX,
    MALFORMED_RLE,
    OUTSIDE,
    TOO_SMALL,
    UNKNOWN_CATEGORY,
    CategoryMap,
    CocoDataset,
    coco_split_paths,
    open_coco_split,
)


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
