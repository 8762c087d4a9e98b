"""A detector's ONNX export predicts as its weights do: the same detections within the export
tolerance, in the original image's pixels, with the category ids of the file's own metadata.
(A detector has no `.pt2`: `twins.tasks.detect.export` says why.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import twins
from factories import TINY_MODEL
from twins.export.runtimes import open_artifact
from twins.tasks import export, predict
from twins.tasks.detect.export import counterparts
from twins.weights import StateDict, model_metadata, save_weights

NAMES = ["circle", "square", "bar"]


def _detector(path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = twins.create_model(
        "retinanet_pcpvt_small",
        num_classes=3,
        min_size=64,
        max_size=96,
        resize_in_model=False,  # as trained here: images resized as the metadata says
        **TINY_MODEL,
    ).eval()
    with torch.no_grad():  # every anchor scores about 0.95: detections whatever the image
        model.head.classification_head.cls_logits.bias.fill_(3.0)
    metadata = model_metadata(model, NAMES)
    metadata["dataset"] = {"category_ids": [3, 7, 11], "category_names": NAMES}
    save_weights(StateDict(model.state_dict(), metadata), path)
    return path, model


def test_a_detector_onnx_detects_what_its_weights_detect(tmp_path):
    checkpoint, model = _detector(tmp_path / "detector.safetensors")
    exported = export(checkpoint, "onnx", tmp_path / "detector.onnx", image_size=64, check=False)
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)

    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        (reference,) = model([image])
    (found,) = open_artifact(exported.path, device="cpu")([image])
    assert found["boxes"].shape == reference["boxes"].shape

    expected = twins.Predictor(checkpoint, device="cpu")(photo)
    row = twins.Predictor(exported.path, device="cpu")(torch.from_numpy(pixels).permute(2, 0, 1))
    assert row["image"] == 0 and expected["image"] == str(photo)
    assert len(row["scores"]) == len(expected["scores"]) > 0
    assert set(row["category_ids"]) <= {3, 7, 11}
    assert set(row["labels"]) <= set(NAMES)
    np.testing.assert_allclose(sorted(row["scores"]), sorted(expected["scores"]), atol=1e-4)
    boxes = np.array(row["boxes"])  # in the photo's 120 x 90 pixels, not the 64-pixel input's
    assert boxes[:, [0, 2]].max() <= 120 + 1e-3 and boxes[:, [1, 3]].max() <= 90 + 1e-3
    assert boxes[:, [0, 2]].max() > 64 or boxes[:, [1, 3]].max() > 64

    # twins predict --json on the export: the same COCO results as on the weights (matched by
    # category and nearest box: scores that tie to a few ulps may come in either order).
    found, reference = (
        {
            "boxes": np.array([r["bbox"] for r in listed]),
            "labels": np.array([r["category_id"] for r in listed]),
        }
        for listed in (
            predict(exported.path, [str(photo)], device="cpu").to_json(),
            predict(checkpoint, [str(photo)], device="cpu").to_json(),
        )
    )
    assert len(found["boxes"]) == len(reference["boxes"]) > 0
    order = counterparts(found, reference)
    np.testing.assert_allclose(found["boxes"][order], reference["boxes"], atol=1e-2)
