"""`twins export --format openvino` of a segmenter: the IR's "out" logits equal eager PyTorch's
at a size other than the traced one, its rt_info carries the data set's metadata; int8 scores
mIoU on a scene folder's held-out half."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import twins
from twins.cli.main import main
from twins.export.runtimes.openvino import OpenVINOModel
from twins.tasks.scenes import SceneLayout, write_digit_scenes


def _export(checkpoint: Path, output: Path, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


@pytest.mark.slow  # a minute and more on a shared small CPU: tracing and compiling the heads
def test_a_segmenter_ir_gives_the_out_logits_as_eager_does(tiny_segmenter_run, tmp_path):
    checkpoint = tiny_segmenter_run / "checkpoints" / "last.pt"
    assert _export(checkpoint, tmp_path / "segmenter.xml") == 0
    model = twins.load_model(checkpoint).eval()
    runtime = OpenVINOModel(tmp_path / "segmenter.xml")
    assert runtime.metadata["task"] == "segment"
    assert runtime.metadata["dataset"]["reduce_zero_label"] is True
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)["out"]
    torch.testing.assert_close(runtime(images)["out"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # two minutes on a shared small CPU: the IR, NNCF, two scorings
def test_int8_of_a_segmenter_scores_miou_on_the_held_out_scenes(tiny_segmenter_run, tmp_path):
    """The 2-iteration segmenter's mIoU says little; the test follows the figures through: both
    measured on the held-out half of the validation scenes, recorded in the int8 model."""
    checkpoint = tiny_segmenter_run / "checkpoints" / "last.pt"
    calibration = tmp_path / "scenes"
    write_digit_scenes(calibration, train=0, val=16, layout=SceneLayout(size=48), seed=1)
    output = tmp_path / "int8.xml"
    extra = ["--int8", "--calibration", str(calibration), "--max-drop", "100"]
    assert _export(checkpoint, output, *extra) == 0
    record = OpenVINOModel(output).int8
    assert record["metric"] == "mIoU" and record["held_out_images"] == 8
    assert 0 <= record["int8"] <= 100 and 0 <= record["float32"] <= 100
