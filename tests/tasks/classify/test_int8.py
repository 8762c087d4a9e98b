"""`twins export --format openvino --int8 --calibration DIR` of a classifier: quantised with
NNCF on half of a class-folder set, kept when top-1 on the other half holds, refused (nothing
written) when it drops by more than max_drop or the folder is too small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from factories import make_config, write_imagefolder
from twins.cli.main import main
from twins.export.int8 import MIN_IMAGES
from twins.export.runtimes.openvino import OpenVINOModel
from twins.tasks import fit


def _export(checkpoint: Path, output: Path, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """(checkpoint, calibration folder): a tiny classifier trained on colour classes, and 24
    images of them it did not see, in class folders."""
    root = tmp_path_factory.mktemp("classifier")
    data = write_imagefolder(root / "data", train_per_class=16, val_per_class=(2, 2, 2, 2))
    calibration = write_imagefolder(root / "calibration", 0, (6, 6, 6, 6), seed=1) / "val"
    fit(make_config(data_url=str(data), train_url=str(root / "run"), epochs=3))
    return root / "run" / "checkpoints" / "last.pt", calibration


def test_int8_keeps_top1_on_the_held_out_half_and_says_so(trained_classifier, tmp_path, capsys):
    checkpoint, calibration = trained_classifier
    output = tmp_path / "int8.xml"
    assert _export(checkpoint, output, "--int8", "--calibration", str(calibration)) == 0
    printed = capsys.readouterr().out
    assert "int8 kept: top-1 on the 12 held-out images" in printed
    runtime = OpenVINOModel(output)
    record = runtime.int8
    assert record["metric"] == "top-1" and record["held_out_images"] == 12
    assert record["float32"] - record["int8"] <= 0.5 and record["float32"] > 50
    assert runtime(torch.randn(4, 3, 32, 32)).shape == (4, 4)


def test_int8_refusal_names_both_figures(trained_classifier, tmp_path, monkeypatch, capsys):
    """The quantisation runs; its score is lowered by 10 points, as a model int8 breaks
    would score, so that the refusal is met whatever the tiny model's luck."""
    import twins.export.int8 as int8

    checkpoint, calibration = trained_classifier
    scored = int8.score
    calls = []

    def worse_after_quantisation(compiled, calibration_set, held_out):
        calls.append(1)
        value = scored(compiled, calibration_set, held_out)
        return value if len(calls) == 1 else value - 10

    monkeypatch.setattr(int8, "score", worse_after_quantisation)
    args = ["--int8", "--calibration", str(calibration)]
    assert _export(checkpoint, tmp_path / "int8.xml", *args) != 0
    # NNCF's progress bars come first, on stderr; the refusal is one line after them.
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("twins: error: int8 refused")
    assert "int8 refused: top-1 on the 12 held-out images" in error and "float32 " in error
    assert "a drop of 10.00 points" in error and "max_drop 0.5" in error
    assert not (tmp_path / "int8.xml").exists() and not (tmp_path / "int8.bin").exists()


def test_a_calibration_folder_of_too_few_images_is_refused(trained_classifier, tmp_path, capsys):
    checkpoint, _ = trained_classifier
    few = write_imagefolder(tmp_path / "few", 0, (2, 2, 2, 2)) / "val"
    assert MIN_IMAGES > 8
    output = tmp_path / "out" / "int8.xml"
    assert _export(checkpoint, output, "--int8", "--calibration", str(few)) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"has 8 usable images; int8 needs at least {MIN_IMAGES}" in error
    assert not output.parent.exists()
