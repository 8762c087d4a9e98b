"""`twins export --format openvino`: the IR takes other sizes than the one traced, matches eager
PyTorch, carries the metadata in its rt_info, runs through `OpenVINOModel` as the eager model
does; int8 keeps or refuses by the task's metric on a calibration folder's held-out half; the
bad inputs are refused in one line with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.errors import TwinsError
from twins.export.runtimes.openvino import OpenVINOModel, is_openvino_model
from twins.weights import StateDict, model_metadata, save_weights

CLASSES = ["class_0", "class_1", "class_2", "class_3"]
PREPROCESSING = {
    "image_size": 32,
    "crop_pct": 1.0,
    "crop_mode": "center",
    "interpolation": "bilinear",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


def _export(checkpoint: Path, output: Path, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


@pytest.mark.parametrize("arch", ["pcpvt_small", "svt_small"])
def test_the_ir_matches_eager_at_other_sizes_and_carries_the_metadata(arch, tmp_path, capsys):
    torch.manual_seed(0)
    model = twins.create_model(arch, num_classes=4, **TINY_MODEL).eval()
    save_weights(
        StateDict(model.state_dict(), model_metadata(model, CLASSES, PREPROCESSING)),
        tmp_path / "model.safetensors",
    )
    assert _export(tmp_path / "model.safetensors", tmp_path / "ir" / "model.xml") == 0
    printed = capsys.readouterr().out
    assert "checked input 3x3x40x104" in printed  # a size whose SVT windows need padding
    assert is_openvino_model(tmp_path / "ir") and is_openvino_model(tmp_path / "ir" / "model.xml")
    assert sorted(path.name for path in (tmp_path / "ir").iterdir()) == ["model.bin", "model.xml"]
    runtime = OpenVINOModel(tmp_path / "ir")
    assert runtime.metadata["arch"] == arch and runtime.metadata["class_names"] == CLASSES
    assert runtime.metadata["preprocessing"] == PREPROCESSING and runtime.int8 is None
    for shape in [(1, 3, 32, 32), (2, 3, 72, 50)]:
        images = torch.randn(shape)
        with torch.no_grad():
            expected = model(images)
        torch.testing.assert_close(runtime(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--int8"], "int8 needs calibration images"),
        (["--calibration", "somewhere"], "calibration is read by the int8 export only"),
    ],
)
def test_int8_options_without_their_partner_are_refused(extra, named, tmp_path, capsys):
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    save_weights(StateDict(model.state_dict(), model_metadata(model)), tmp_path / "m.safetensors")
    assert _export(tmp_path / "m.safetensors", tmp_path / "m.xml", *extra) != 0
    assert named in capsys.readouterr().err
    assert not (tmp_path / "m.xml").exists()


def test_int8_of_another_format_is_refused(tmp_path, capsys):
    args = ["export", "--checkpoint", str(tmp_path / "m.pth"), "--format", "onnx"]
    args += ["-o", str(tmp_path / "m.onnx"), "--int8", "--calibration", str(tmp_path)]
    assert main(args) != 0
    assert "int8 quantisation is offered for OpenVINO models, not onnx" in capsys.readouterr().err


def test_an_ir_without_metadata_needs_arch(tmp_path):
    import openvino

    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=4, **TINY_MODEL).eval()
    converted = openvino.convert_model(model, example_input=torch.randn(1, 3, 32, 32))
    openvino.save_model(converted, str(tmp_path / "plain.xml"))
    with pytest.raises(TwinsError, match="carries no twins metadata.*pass arch"):
        OpenVINOModel(tmp_path / "plain.xml")
    runtime = OpenVINOModel(tmp_path / "plain.xml", arch="pcpvt_small")
    assert runtime.metadata == {"arch": "pcpvt_small"}
    with pytest.raises(TwinsError, match="runs on the CPU, not cuda: use device cpu"):
        OpenVINOModel(tmp_path / "plain.xml", arch="pcpvt_small", device="cuda")


def test_without_openvino_installed_the_export_names_the_extra(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    save_weights(StateDict(model.state_dict(), model_metadata(model)), tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an import finds when not installed
    assert _export(tmp_path / "m.safetensors", tmp_path / "m.xml") != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "openvino is not installed: pip install 'twins[openvino]'" in error
    assert not (tmp_path / "m.xml").exists()
