"""`twins export --format openvino` of a segmenter: the IR's "out" logits equal eager PyTorch's
at a size other than the traced one, its rt_info carries the data set's metadata."""

from __future__ import annotations

from pathlib import Path

import torch

import twins
from twins.cli.main import main
from twins.export.runtimes.openvino import OpenVINOModel


def _export(checkpoint: Path, output: Path, *extra: str) -> int:
    args = ["export", "--checkpoint", str(checkpoint), "--format", "openvino", "-o", str(output)]
    return main([*args, "--image-size", "64", *extra])


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
