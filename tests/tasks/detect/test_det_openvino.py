"""`twins export --format openvino` of a detector: the IR of its ONNX graph finds what PyTorch
finds at image sizes other than the traced one, carries the categories, and `OpenVINOModel`
gives torchvision's list of dicts; int8 is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.export.runtimes.openvino import OpenVINOModel
from twins.weights import StateDict, model_metadata, save_weights

DATASET = {"category_ids": [3, 7, 11], "category_names": ["circle", "square", "bar"]}


def _detector(path: Path) -> torch.nn.Module:
    """A tiny RetinaNet that finds things (every anchor scores about 0.95), saved with the
    metadata a training run writes."""
    torch.manual_seed(0)
    model = twins.create_model(
        "retinanet_pcpvt_small",
        num_classes=3,
        min_size=64,
        max_size=96,
        resize_in_model=False,
        **TINY_MODEL,
    )
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(3.0)
    metadata = {**model_metadata(model, DATASET["category_names"]), "dataset": DATASET}
    save_weights(StateDict(model.state_dict(), metadata), path)
    return model.eval()


def _export(checkpoint: Path, output: Path, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


@pytest.mark.slow  # the TorchScript-based ONNX export of a detector takes a minute here
def test_the_detector_ir_finds_what_pytorch_finds(tmp_path: Path, capsys) -> None:
    model = _detector(tmp_path / "run.pth")
    assert _export(tmp_path / "run.pth", tmp_path / "detector.xml") == 0
    assert "checked input 3x104x40" in capsys.readouterr().out
    runtime = OpenVINOModel(tmp_path / "detector.xml")
    assert runtime.metadata["dataset"] == DATASET and runtime.metadata["task"] == "detect"
    image = torch.rand(3, 72, 88)
    with torch.no_grad():
        expected = model([image])[0]
    (found,) = runtime([image])  # as torchvision's detectors take images
    assert len(expected["boxes"]) > 0 and found["boxes"].shape == expected["boxes"].shape
    torch.testing.assert_close(found["scores"], expected["scores"], rtol=1e-4, atol=1e-4)


def test_int8_of_a_detector_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    _detector(tmp_path / "run.pth")
    extra = ["--int8", "--calibration", str(tmp_path)]
    assert _export(tmp_path / "run.pth", tmp_path / "detector.xml", *extra) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "int8 export is not offered for detection models" in error
    assert not (tmp_path / "detector.xml").exists()
