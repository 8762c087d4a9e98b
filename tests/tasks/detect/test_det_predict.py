"""`twins predict` on a detector: COCO result objects that pycocotools scores as they are, in
the annotations' category ids and the original pixels, and a picture per image."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import twins
from coco_files import CATEGORIES, annotation, write_coco_val, write_image
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
    args += ["--coco", str(coco_images / "annotations" / "instances_val.json")]
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
    assert results and all(r["image_id"] == 1 and r["file_name"] == "small.jpg" for r in results)
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
    assert {r["image_id"] for r in json.loads(captured.out)} == {1}  # never read from the name
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


def _score(truth: COCO, results: list[dict]) -> float:
    evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return float(evaluation.stats[0])


def _write_users_coco(folder: Path) -> Path:
    """A user's own COCO file whose all-digit names are not the ids: 7.png (64 x 48) is image
    12 with a square in its ground truth, 12.png (32 x 32) is image 7, empty."""
    folder.mkdir()
    write_image(folder / "7.png", 64, 48, [(7, [8, 8, 40, 30])])
    write_image(folder / "12.png", 32, 32, [])
    content = {
        "images": [
            {"id": 12, "file_name": "7.png", "width": 64, "height": 48},
            {"id": 7, "file_name": "12.png", "width": 32, "height": 32},
        ],
        "annotations": [annotation(1, 12, 7, [8, 8, 40, 30])],
        "categories": CATEGORIES,
    }
    annotation_file = folder / "instances.json"
    annotation_file.write_text(json.dumps(content))
    return annotation_file


def test_ids_come_from_the_users_coco_file_never_from_the_names(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    annotation_file = _write_users_coco(tmp_path / "mine")
    args = ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "mine"), "--json"]
    assert main([*args, "--coco", str(annotation_file)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {(r["file_name"], r["image_id"]) for r in results} == {("7.png", 12), ("12.png", 7)}
    # pycocotools scores each detection against the image it was found in.
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotation_file))
        scored = _score(truth, results)
        by_image = {i: [r for r in results if r["image_id"] == i] for i in (7, 12)}
        expected = coco_metrics(truth, by_image, ("bbox",))["bbox_AP"]
    assert scored * 100 == pytest.approx(expected)
    for result in results:
        height, width = (
            truth.imgs[result["image_id"]]["height"],
            truth.imgs[result["image_id"]]["width"],
        )
        x, y, w, h = result["bbox"]
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
    # Without a COCO file: numbered in input order (12.png before 7.png, sorted), and said so.
    assert main(args) == 0
    results = json.loads(capsys.readouterr().out)
    assert {(r["file_name"], r["image_id"]) for r in results} == {("12.png", 1), ("7.png", 2)}


def test_an_image_the_coco_file_does_not_list_is_named(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    annotation_file = _write_users_coco(tmp_path / "mine")
    write_image(tmp_path / "mine" / "extra.png", 32, 32, [])
    args = ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "mine"), "--json"]
    assert main([*args, "--coco", str(annotation_file)]) == 0
    captured = capsys.readouterr()
    assert {r["image_id"] for r in json.loads(captured.out)} == {7, 12}
    assert "extra.png" in captured.err and "not among the images of --coco" in captured.err


def test_a_coco_file_with_a_repeated_image_id_is_refused_naming_both(tmp_path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    annotation_file = _write_users_coco(tmp_path / "mine")
    content = json.loads(annotation_file.read_text())
    content["images"][1]["id"] = 12  # 12.png now shares 7.png's id
    annotation_file.write_text(json.dumps(content))
    args = ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "mine"), "--json"]
    assert main([*args, "--coco", str(annotation_file)]) != 0
    error = capsys.readouterr().err.strip()
    assert "share the id 12" in error and '"7.png"' in error and '"12.png"' in error
    assert len(error.splitlines()) == 1


def test_coco_is_refused_for_a_classifier(tmp_path: Path, capsys) -> None:
    model = twins.create_model("pcpvt_small", num_classes=3, **TINY_MODEL)
    checkpoint = tmp_path / "classifier.safetensors"
    save_weights(StateDict(model.state_dict(), model_metadata(model)), checkpoint)
    annotation_file = _write_users_coco(tmp_path / "mine")
    args = ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "mine" / "7.png")]
    assert main([*args, "--coco", str(annotation_file)]) != 0
    error = capsys.readouterr().err.strip()
    assert "coco: not read by a classify model's predict" in error
    assert len(error.splitlines()) == 1


def test_same_stems_in_two_folders_keep_their_folders(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    photos = tmp_path / "photos"
    for folder, size in (("a", (48, 64)), ("b", (32, 40))):
        (photos / folder).mkdir(parents=True)
        Image.fromarray(np.full((*size, 3), 90, dtype=np.uint8)).save(photos / folder / "x.png")
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(photos / "a" / "x.jpg")
    output = tmp_path / "pictures"
    args = ["predict", "--checkpoint", str(checkpoint), str(photos), "--output", str(output)]
    assert main(args) == 0
    capsys.readouterr()
    shapes = {
        path.relative_to(output).as_posix(): np.asarray(Image.open(path)).shape
        for path in output.rglob("*.png")
    }
    assert shapes == {
        "a/x_png_detections.png": (48, 64, 3),
        "a/x_jpg_detections.png": (20, 30, 3),
        "b/x_detections.png": (32, 40, 3),
    }
    assert main(["predict", "--checkpoint", str(checkpoint), str(photos), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    ids = {r["file_name"]: r["image_id"] for r in results}
    assert ids == {"a/x.jpg": 1, "a/x.png": 2, "b/x.png": 3}


def test_a_picture_onto_an_input_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("x.png", "x_detections.png"):
        Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(photos / name)
    before = {path.name: path.read_bytes() for path in photos.iterdir()}
    args = ["predict", "--checkpoint", str(checkpoint), str(photos), "--output", str(photos)]
    assert main(args) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "would overwrite the input" in error and "x_detections.png" in error
    assert {path.name: path.read_bytes() for path in photos.iterdir()} == before


def test_empty_and_extreme_images_are_named_never_a_stop(tmp_path: Path, capsys) -> None:
    checkpoint = _detector(tmp_path / "detector.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((1, 2000, 3), 90, dtype=np.uint8)).save(photos / "line.png")
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(photos / "fine.png")
    args = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(photos),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    printed, said = capsys.readouterr()
    assert "2 of 3 images skipped" in said and "line.png" in said  # for --json too
    skipped = [line for line in printed.splitlines() if line.startswith("skipped")]
    assert any("empty.png" in line and "the file is empty (0 bytes)" in line for line in skipped)
    assert "BytesIO" not in printed
    # The detector resizes inside itself (torchvision's arithmetic): 2000 x 1 cannot go.
    assert any("line.png" in line and "cannot be processed at 2000x1" in line for line in skipped)
    assert "fine.png: " in printed and len(skipped) == 2


def test_an_extreme_image_goes_through_the_pipelines_resize(tmp_path: Path, capsys) -> None:
    """A detector the fit loop trained is resized by the data pipeline, whose sides never
    round to 0: a 2000 x 1 image is detected at 1333-ish x 1."""
    torch.manual_seed(0)
    model = twins.create_model(
        "retinanet_svt_small", num_classes=3, min_size=64, max_size=96, resize_in_model=False,
        **TINY_MODEL,
    )  # fmt: skip
    metadata = model_metadata(model, NAMES)
    metadata["dataset"] = {"category_ids": CATEGORY_IDS, "category_names": NAMES}
    checkpoint = tmp_path / "detector.safetensors"
    save_weights(StateDict(model.state_dict(), metadata), checkpoint)
    image = tmp_path / "line.png"
    Image.fromarray(np.full((1, 2000, 3), 90, dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert all(r["bbox"][0] + r["bbox"][2] <= 2000 + 1e-3 for r in results)
