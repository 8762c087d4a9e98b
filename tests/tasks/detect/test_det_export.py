"""`twins export` of a detector: safetensors and the Hub layout (`hf`) that rebuild it with its
categories, ONNX that onnxruntime runs at any image size as PyTorch does, and a one-line
refusal of `.pt2`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.export.engine import exported_metadata
from twins.weights import StateDict, load_weights, model_metadata, save_weights

DATASET = {"category_ids": [3, 7, 11], "category_names": ["circle", "square", "bar"]}


def _detector(path: Path, name: str = "retinanet_pcpvt_small") -> torch.nn.Module:
    """A tiny detector that finds things (every anchor scores about 0.95), saved with the
    metadata a training run writes."""
    torch.manual_seed(0)
    model = twins.create_model(
        name, num_classes=3, min_size=64, max_size=96, resize_in_model=False, **TINY_MODEL
    )
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(3.0)
    metadata = {**model_metadata(model, DATASET["category_names"]), "dataset": DATASET}
    save_weights(StateDict(model.state_dict(), metadata), path)
    return model.eval()


def _export(checkpoint: Path, output: Path, format: str, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", format, "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


def test_safetensors_rebuild_the_detector_with_its_categories(tmp_path: Path, capsys) -> None:
    model = _detector(tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "release.safetensors", "safetensors") == 0
    weights = load_weights(tmp_path / "release.safetensors")
    assert weights.metadata["task"] == "detect" and weights.metadata["dataset"] == DATASET
    assert weights.metadata["class_names"] == DATASET["category_names"]
    rebuilt = twins.load_model(tmp_path / "release.safetensors")
    assert rebuilt.arch == "retinanet_pcpvt_small" and rebuilt.model_args == model.model_args
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        expected, found = model([image])[0], rebuilt([image])[0]
    assert len(expected["boxes"]) > 0
    assert all(torch.equal(expected[key], found[key]) for key in expected)


def test_the_hub_layout_keeps_the_detectors_own_config(tmp_path: Path) -> None:
    model = _detector(tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "hf", "hf") == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["arch"] == "retinanet_pcpvt_small" and config["task"] == "detect"
    assert config["dataset"] == DATASET and config["class_names"] == DATASET["category_names"]
    rebuilt = twins.load_model(tmp_path / "hf")
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        expected, found = model([image])[0], rebuilt([image])[0]
    assert all(torch.equal(expected[key], found[key]) for key in expected)


def test_pt2_is_refused_in_one_line_naming_what_works(tmp_path: Path, capsys) -> None:
    _detector(tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "detector.pt2", "pt2") != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "torch.export cannot export retinanet_pcpvt_small" in error
    assert "export safetensors" in error and "onnx" in error
    assert not (tmp_path / "detector.pt2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_pcpvt_small", "maskrcnn_svt_small"])
def test_onnx_detects_as_pytorch_at_any_size(tmp_path: Path, name: str, capsys) -> None:
    model = _detector(tmp_path / "run.pth", "retinanet_pcpvt_small")
    if name != "retinanet_pcpvt_small":
        model = twins.create_model(
            name, num_classes=3, min_size=64, max_size=96, resize_in_model=False, **TINY_MODEL
        ).eval()
        with torch.no_grad():
            # Scores that vary (a bias of 8 makes them all 0.99999964: NMS then keeps one of
            # each tie by position, differently in each runtime)
            model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-1.0, 1, -1, -1]))
        metadata = {**model_metadata(model, DATASET["category_names"]), "dataset": DATASET}
        save_weights(StateDict(model.state_dict(), metadata), tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "detector.onnx", "onnx") == 0
    assert "max relative difference" in capsys.readouterr().out
    assert exported_metadata(tmp_path / "detector.onnx")["dataset"] == DATASET
    session = onnxruntime.InferenceSession(
        str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    image = torch.rand(3, 90, 70)  # neither size traced nor checked at export
    found = dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))
    with torch.no_grad():
        expected = model([image])[0]
    assert names == [n for n in ("boxes", "labels", "scores", "masks") if n in expected]
    assert len(expected["boxes"]) > 0
    for key, value in expected.items():
        assert np.allclose(found[key], value.numpy(), atol=1e-4), key
    json.dumps(exported_metadata(tmp_path / "detector.onnx"))


def test_onnx_outputs_are_named_in_order_and_labels_map_to_category_ids(tmp_path: Path) -> None:
    model = _detector(tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "detector.onnx", "onnx") == 0
    session = onnxruntime.InferenceSession(
        str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    assert names == ["boxes", "labels", "scores"]  # the order docs/detection.md gives
    image = torch.rand(3, 64, 80)
    boxes, labels, scores = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = model([image])[0]
    assert boxes.shape == (len(scores), 4) and labels.dtype == np.int64
    assert np.array_equal(labels, expected["labels"].numpy())
    # Labels are 1..K; the file's metadata turns them into the annotations' category ids.
    category_ids = exported_metadata(tmp_path / "detector.onnx")["dataset"]["category_ids"]
    assert set(labels.tolist()) <= {1, 2, 3}
    assert {category_ids[label - 1] for label in labels.tolist()} <= {3, 7, 11}
