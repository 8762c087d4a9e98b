"""`twins export` of a segmenter: ONNX (output "out", dynamic height and width, checked in
onnxruntime), `.pt2`, `.safetensors` and the Hub layout (`hf`) that rebuild the segmenter with its palette."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.export.engine import exported_metadata
from twins.tasks import export
from twins.tasks.segment.export import AdaptiveAvgPoolAnySize
from twins.weights import StateDict, load_weights, model_metadata, save_weights


@pytest.fixture(scope="module")
def trained(tiny_segmenter_run):
    """(the checkpoint, the trained segmenter, the data set's classes.json)."""
    checkpoint = tiny_segmenter_run / "checkpoints" / "last.pt"
    spec = json.loads((tiny_segmenter_run.parent / "data" / "classes.json").read_text())
    return checkpoint, twins.load_model(checkpoint).eval(), spec


def _logits(model, images):
    with torch.no_grad():
        return model(images)["out"].numpy()


def test_safetensors_rebuild_the_segmenter_with_its_palette(trained, tmp_path, capsys):
    checkpoint, model, spec = trained
    output = tmp_path / "model.safetensors"
    args = ["export", "--checkpoint", str(checkpoint), "--format", "safetensors", "-o"]
    assert main([*args, str(output)]) == 0
    metadata = load_weights(output).metadata
    assert metadata["task"] == "segment" and metadata["class_names"] == spec["classes"]
    assert metadata["dataset"]["palette"] == spec["palette"]
    assert metadata["dataset"]["reduce_zero_label"] is True
    rebuilt = twins.load_model(output).eval()
    images = torch.randn(1, 3, 64, 96)
    assert np.array_equal(_logits(rebuilt, images), _logits(model, images))


@pytest.mark.slow  # tracing a segmenter takes minutes on a small CPU
def test_onnx_gives_the_out_logits_at_any_height_and_width(trained, tmp_path):
    checkpoint, model, spec = trained
    output = tmp_path / "model.onnx"
    result = export(checkpoint, "onnx", output, image_size=64)
    assert max(result.differences.values()) < 1e-4
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["out"]
    for height, width in ((64, 96), (80, 80)):
        images = torch.randn(1, 3, height, width)
        (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        reference = _logits(model, images)
        assert logits.shape == (1, 11, height, width)
        assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()
    metadata = exported_metadata(output)
    assert metadata["task"] == "segment" and metadata["dataset"]["palette"] == spec["palette"]


@pytest.mark.slow
def test_pt2_gives_the_out_logits_at_any_height_and_width(trained, tmp_path):
    checkpoint, model, spec = trained
    output = tmp_path / "model.pt2"
    export(checkpoint, "pt2", output, image_size=64)
    program = torch.export.load(str(output)).module()
    for height, width in ((64, 96), (80, 80)):
        images = torch.randn(2, 3, height, width)
        with torch.no_grad():
            exported = program(images).numpy()
        assert np.allclose(exported, _logits(model, images), atol=1e-5)
    assert exported_metadata(output)["dataset"]["reduce_zero_label"] is True


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_the_traceable_pooling_is_torchs_adaptive_average_pooling(size):
    for height, width in ((2, 3), (5, 7), (16, 21), (6, 6)):
        x = torch.randn(2, 4, height, width)
        expected = torch.nn.AdaptiveAvgPool2d(size)(x)
        assert torch.allclose(AdaptiveAvgPoolAnySize(size)(x), expected, atol=1e-6)


@pytest.mark.slow
def test_upernet_onnx_pools_at_any_size(tmp_path):
    model = twins.create_model("upernet_svt_small", num_classes=5, **TINY_MODEL).eval()
    weights = tmp_path / "upernet.safetensors"
    save_weights(StateDict(model.state_dict(), model_metadata(model)), weights)
    export(weights, "onnx", tmp_path / "upernet.onnx", image_size=64)
    session = onnxruntime.InferenceSession(
        str(tmp_path / "upernet.onnx"), providers=["CPUExecutionProvider"]
    )
    for height, width in ((64, 96), (80, 80), (100, 150)):
        images = torch.randn(1, 3, height, width)
        (logits,) = session.run(None, {"images": images.numpy()})
        reference = _logits(model, images)
        assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max()


def test_the_hub_layout_keeps_the_segmenters_own_config(trained, tmp_path):
    checkpoint, model, spec = trained
    folder = tmp_path / "hf"
    export(checkpoint, "hf", folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "semantic_fpn_svt_small" and config["task"] == "segment"
    assert config["dataset"]["palette"] == spec["palette"]
    assert config["class_names"] == spec["classes"]
    assert "library_name: twins" in (folder / "README.md").read_text()
    images = torch.randn(1, 3, 64, 64)
    np.testing.assert_array_equal(
        _logits(twins.load_model(folder).eval(), images), _logits(model, images)
    )
