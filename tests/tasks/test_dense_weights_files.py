"""Every weights file `twins convert` and `twins export` write of a segmenter or a detector loads
back with `twins.load_model` as the same model (same outputs), carrying what the file knows of
its data in `pretrained_cfg`; a format that cannot hold the model is refused before anything is
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.tasks import export
from twins.weights import StateDict, load_weights, model_metadata, save_weights

CATEGORIES = {"category_ids": [3, 7, 11], "category_names": ["circle", "square", "bar"]}
DETECT_PREPROCESSING = {"img_scale": [96, 64], "min_size": 64, "max_size": 96}
DETECT_PREPROCESSING |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
DETECT_PREPROCESSING |= {"pad_divisor": 32}


def _detector_file(path: Path) -> torch.nn.Module:
    """A tiny RetinaNet that finds things (every anchor scores about 0.95), saved with the
    metadata a detection run writes (`DetectTask.metadata`)."""
    torch.manual_seed(0)
    model = twins.create_model(
        "retinanet_svt_small", num_classes=3, min_size=64, max_size=96, resize_in_model=False,
        **TINY_MODEL,
    )  # fmt: skip
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(3.0)
    metadata = model_metadata(model, CATEGORIES["category_names"], DETECT_PREPROCESSING)
    save_weights(StateDict(model.state_dict(), metadata | {"dataset": CATEGORIES}), path)
    return model.eval()


@pytest.fixture(scope="module")
def segmenter(tiny_segmenter_run):
    """(a trained segmenter's checkpoint, its classes.json)."""
    spec = json.loads((tiny_segmenter_run.parent / "data" / "classes.json").read_text())
    return tiny_segmenter_run / "checkpoints" / "last.pt", spec


def _same_segmenter(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        return torch.equal(a.eval()(images)["out"], b.eval()(images)["out"])


def _same_detector(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        found, expected = a.eval()([image])[0], b.eval()([image])[0]
    assert len(expected["boxes"]) > 0
    return all(torch.equal(found[key], expected[key]) for key in expected)


def _check_segmenter_cfg(model: torch.nn.Module, spec: dict) -> None:
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == "semantic_fpn_svt_small" and cfg["num_classes"] == 11
    assert cfg["label_names"] == tuple(spec["classes"])
    assert cfg["palette"] == spec["palette"] and cfg["reduce_zero_label"] is True
    assert cfg["img_scale"] == [96, 48]
    assert cfg["mean"] == (123.675, 116.28, 103.53) and cfg["std"] == (58.395, 57.12, 57.375)


def _check_detector_cfg(model: torch.nn.Module) -> None:
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == "retinanet_svt_small" and cfg["num_classes"] == 3
    assert cfg["label_names"] == ("circle", "square", "bar")
    assert cfg["category_ids"] == [3, 7, 11] and cfg["img_scale"] == [96, 64]
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["min_size"] == 64


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_converted_segmenter_loads_back_with_its_data(segmenter, tmp_path, suffix, capsys):
    checkpoint, spec = segmenter
    output = tmp_path / f"segmenter{suffix}"
    assert main(["convert", str(checkpoint), str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = twins.load_model(output)
    assert _same_segmenter(loaded, twins.load_model(checkpoint))
    _check_segmenter_cfg(loaded, spec)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_converted_detector_loads_back_with_its_categories(tmp_path, suffix, capsys):
    model = _detector_file(tmp_path / "run.pth")
    output = tmp_path / f"detector{suffix}"
    assert main(["convert", str(tmp_path / "run.pth"), str(output)]) == 0
    loaded = twins.load_model(output)
    assert _same_detector(loaded, model)
    _check_detector_cfg(loaded)
    # The caller turns the model's labels (1..K) into the annotations' category ids.
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        labels = loaded([image])[0]["labels"].tolist()
    ids = [loaded.pretrained_cfg["category_ids"][label - 1] for label in labels]
    assert ids and set(ids) <= {3, 7, 11}


def test_a_dense_model_is_not_converted_to_a_mindspore_ckpt(segmenter, tmp_path, capsys):
    _detector_file(tmp_path / "detector.pth")
    sources = {"semantic_fpn_svt_small": segmenter[0], "retinanet_svt_small": "detector.pth"}
    for arch, source in sources.items():
        output = tmp_path / f"{arch}.ckpt"
        assert main(["convert", str(tmp_path / source), str(output)]) != 0
        captured = capsys.readouterr()
        assert "wrote" not in captured.out
        (error,) = captured.err.strip().splitlines()
        assert "holds Twins classifiers only" in error and f"not {arch}" in error
        assert ".safetensors or .pth" in error
        assert not output.exists()


def test_a_segmenters_pt2_export_loads_back_with_its_data(segmenter, tmp_path):
    checkpoint, spec = segmenter
    output = tmp_path / "segmenter.pt2"
    export(checkpoint, "pt2", output, image_size=64, check=False)
    weights = load_weights(output)
    assert weights["decode_head.scale_heads.0.0.bn.num_batches_tracked"].dtype == torch.int64
    loaded = twins.load_model(output)
    assert _same_segmenter(loaded, twins.load_model(checkpoint))
    _check_segmenter_cfg(loaded, spec)


def test_safetensors_exports_load_back_with_their_data(segmenter, tmp_path):
    checkpoint, spec = segmenter
    export(checkpoint, "safetensors", tmp_path / "segmenter.safetensors")
    _check_segmenter_cfg(twins.load_model(tmp_path / "segmenter.safetensors"), spec)
    model = _detector_file(tmp_path / "run.pth")
    export(tmp_path / "run.pth", "safetensors", tmp_path / "detector.safetensors")
    loaded = twins.load_model(tmp_path / "detector.safetensors")
    assert _same_detector(loaded, model)
    _check_detector_cfg(loaded)
