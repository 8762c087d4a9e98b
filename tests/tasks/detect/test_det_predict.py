"""`twins predict` on a detector: COCO result objects that pycocotools scores as they are, in
the annotations' category ids and the original pixels, and a picture per image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

import twins
from coco_files import write_coco_val
from factories import TINY_MODEL
from twins.cli.main import main
from twins.tasks.detect.data import open_coco_split
from twins.tasks.detect.metrics import coco_metrics
from twins.weights import StateDict, model_metadata, save_weights

CATEGORY_IDS = [3, 7, 11]  # coco_files' categories, sorted: labels 1, 2, 3
NAMES = ["circle", "square", "bar"]


def _detector(path: Path, *, dataset: bool = True) -> Path:
    """A tiny Mask R-CNN whose box classifier calls every proposal label 2 ("square", category
    7) with a score near 1, saved with the metadata a training run writes."""
    torch.manual_seed(0)
    model = twins.create_model(
        "maskrcnn_svt_small", num_classes=3, min_size=64, max_size=96, **TINY_MODEL
    )
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-8.0, -8.0, 8.0, -8.0]))
    metadata = model_metadata(model, NAMES)
    if dataset:
        metadata["dataset"] = {"category_ids": CATEGORY_IDS, "category_names": NAMES}
    save_weights(StateDict(model.state_dict(), metadata), path)
    return path


@pytest.fixture
def coco_images(tmp_path: Path) -> Path:
    """coco_files' val split with its images named as COCO names them (the id, zero-padded)."""
    root = write_coco_val(tmp_path / "coco")
    annotation_file = root / "annotations" / "instances_val.json"
    content = json.loads(annotation_file.read_text())
    for image in content["images"]:
        renamed = f"{image['id']:012d}.png"
        shutil.move(root / "val" / image["file_name"], root / "val" / renamed)
        image["file_name"] = renamed
    annotation_file.write_text(json.dumps(content))
    return root


def test_json_is_what_pycocotools_scores(tmp_path: Path, coco_images: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    args = ["predict", "--checkpoint", str(checkpoint), str(coco_images / "val"), "--json"]
    assert main(args) == 0
    results = json.loads(capsys.readouterr().out)
    dataset = open_coco_split(coco_images, "val", with_masks=True)
    sizes = {i: (image["height"], image["width"]) for i, image in dataset.coco.imgs.items()}
    assert results and {r["category_id"] for r in results} == {7}
    for result in results:
        height, width = sizes[result["image_id"]]
        assert result["file_name"] == f"{result['image_id']:012d}.png"
        x, y, w, h = result["bbox"]
        assert x >= 0 and y >= 0 and x + w <= width + 1e-3 and y + h <= height + 1e-3
        assert result["segmentation"]["size"] == [height, width]
        assert 0.9 < result["score"] <= 1
    # pycocotools reads the printed list as it is, and scores it as the evaluation does.
    for iou_type in ("bbox", "segm"):
        evaluation = COCOeval(dataset.coco, dataset.coco.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        by_image = {i: [r for r in results if r["image_id"] == i] for i in sizes}
        expected = coco_metrics(dataset.coco, by_image, (iou_type,))[f"{iou_type}_AP"]
        assert evaluation.stats[0] * 100 == pytest.approx(expected)


def test_pictures_show_the_detections(tmp_path: Path, coco_images: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    output = tmp_path / "pictures"
    image = coco_images / "val" / "000000000001.png"
    args = ["predict", "--checkpoint", str(checkpoint), str(image), "--output", str(output)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "square  " in printed and "picture:" in printed
    picture = output / "000000000001_detections.png"
    drawn, original = np.asarray(Image.open(picture)), np.asarray(Image.open(image))
    assert drawn.shape == original.shape
    assert (drawn != original).any(axis=-1).mean() > 0.05  # boxes and masks drawn over it
    # Nothing scores 1.0 or more: the picture is the image.
    assert main([*args, "--min-score", "1"]) == 0
    assert np.array_equal(np.asarray(Image.open(picture)), original)


def test_boxes_and_masks_are_in_the_original_pixels(tmp_path: Path, capsys) -> None:
    """A 40 x 30 image goes through the model at 64 x 85: what is printed is back at 40 x 30."""
    checkpoint = _detector(tmp_path / "detector.safetensors")
    image = tmp_path / "small.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results and all(r["image_id"] == "small.jpg" for r in results)
    boxes = np.array([r["bbox"] for r in results])
    assert boxes[:, 0].min() >= 0 and (boxes[:, 0] + boxes[:, 2]).max() <= 40 + 1e-3
    assert (boxes[:, 1] + boxes[:, 3]).max() <= 30 + 1e-3
    assert (boxes[:, 0] + boxes[:, 2]).max() > 20  # not squeezed into a corner either
    assert mask_utils.decode(results[0]["segmentation"]).shape == (30, 40)


def test_labels_stand_for_categories_when_the_file_has_none(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors", dataset=False)
    image = tmp_path / "000000000005.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), "--json"]) == 0
    captured = capsys.readouterr()
    assert {r["category_id"] for r in json.loads(captured.out)} == {2}
    assert {r["image_id"] for r in json.loads(captured.out)} == {5}
    assert "do not record the category ids" in captured.err


def test_output_is_refused_for_a_classifier(tmp_path: Path, capsys) -> None:
    model = twins.create_model("pcpvt_small", num_classes=3, **TINY_MODEL)
    checkpoint = tmp_path / "classifier.safetensors"
    save_weights(StateDict(model.state_dict(), model_metadata(model)), checkpoint)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    args = ["predict", "--checkpoint", str(checkpoint), str(image), "--output", str(tmp_path)]
    assert main(args) != 0
    assert "--output" in capsys.readouterr().err
