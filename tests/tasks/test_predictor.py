"""`twins.Predictor(file)(images)`, for every task: the rows `twins predict --out` writes, for
images given as paths, PIL images, arrays or tensors, in the images' own pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from factories import TINY_MODEL
from twins.errors import TwinsError
from twins.inference.rows import read_rows
from twins.tasks import predict
from twins.tasks.predictor import stream_predictions
from twins.weights import StateDict, model_metadata, save_weights


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(60, 90), (80, 50)]):
        paths.append(folder / f"photo{index}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_a_classifier_gives_its_json_entries_for_any_image_form(tmp_path, photos):
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=3, **TINY_MODEL)
    metadata = model_metadata(model, ["a", "b", "c"], {"image_size": 32, "crop_pct": 1.0})
    save_weights(StateDict(model.state_dict(), metadata), tmp_path / "model.safetensors")
    predictor = twins.Predictor(tmp_path / "model.safetensors", device="cpu", topk=2)
    expected = predict(tmp_path / "model.safetensors", [str(p) for p in photos], topk=2)
    entries = expected.to_json()["predictions"]
    assert predictor([str(p) for p in photos]) == entries
    pixels = np.array(Image.open(photos[0]))
    for held in (Image.open(photos[0]), pixels, torch.from_numpy(pixels).permute(2, 0, 1)):
        row = predictor(held)
        assert row["image"] == 0 and row["top"] == entries[0]["top"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"no image")
    assert "error" in predictor([broken, photos[1]])[0]
    with pytest.raises(TwinsError, match="not read by a classify model"):
        twins.Predictor(tmp_path / "model.safetensors", min_score=0.3)


def test_a_segmenter_gives_label_maps_at_the_image_size(tiny_segmenter_run, photos, tmp_path):
    checkpoint = tiny_segmenter_run / "checkpoints" / "last.pt"
    rows = twins.Predictor(checkpoint, device="cpu")([Image.open(p) for p in photos])
    for row, path in zip(rows, photos, strict=True):
        width, height = Image.open(path).size
        assert row["label_map"].shape == (height, width)
        assert sum(row["counts"].values()) == width * height
        assert row["classes"] == list(row["counts"])

    out = tmp_path / "labels.csv"
    result = stream_predictions(checkpoint, [str(p) for p in photos], out, output=tmp_path / "png")
    written = read_rows(out)
    assert (
        result.images == 2
        and [Path(r["label_map"]).parent for r in written] == [tmp_path / "png"] * 2
    )
    for row, in_memory in zip(written, rows, strict=True):
        assert np.array_equal(np.array(Image.open(row["label_map"])) - 1, in_memory["label_map"])
        assert json.loads(row["counts"]) == in_memory["counts"]
    with pytest.raises(TwinsError, match="--output DIR"):
        stream_predictions(checkpoint, [str(photos[0])], tmp_path / "no_folder.jsonl")


def test_a_detector_gives_its_json_results_as_boxes_in_the_image_pixels(tmp_path, photos):
    torch.manual_seed(0)
    model = twins.create_model(
        "retinanet_pcpvt_small", num_classes=2, min_size=64, max_size=96, **TINY_MODEL
    )
    with torch.no_grad():  # every anchor scores about 0.95: detections whatever the image
        model.head.classification_head.cls_logits.bias.fill_(3.0)
    metadata = model_metadata(model, ["cat", "dog"])
    metadata["dataset"] = {"category_ids": [17, 18], "category_names": ["cat", "dog"]}
    save_weights(StateDict(model.state_dict(), metadata), tmp_path / "detector.safetensors")

    results = predict(tmp_path / "detector.safetensors", [str(photos[0])], device="cpu").to_json()
    row = twins.Predictor(tmp_path / "detector.safetensors", device="cpu")(
        np.array(Image.open(photos[0]))
    )
    assert len(row["boxes"]) == len(results) > 0
    for box, label, category, score, result in zip(
        row["boxes"], row["labels"], row["category_ids"], row["scores"], results, strict=True
    ):
        x, y, w, h = result["bbox"]
        assert box == pytest.approx([x, y, x + w, y + h], abs=1e-3)
        assert category == result["category_id"] and label == {17: "cat", 18: "dog"}[category]
        assert score == pytest.approx(result["score"], abs=1e-6)
