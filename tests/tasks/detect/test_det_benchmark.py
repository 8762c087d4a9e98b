"""`twins benchmark` of a detector: timed in inference and in training (a box per image to
learn), its MACs counted on a real image; what cannot be compared is one line."""

from __future__ import annotations

import json

import pytest

from twins.cli.main import main

TINY = ["--model-args", '{"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}']
QUICK = ["--device", "cpu", "--image-size", "64", "--batch-size", "2"]
QUICK += ["--warmup", "0", "--iters", "1", "--rounds", "1", "--json"]


@pytest.mark.parametrize(
    ("model", "mode"),
    [
        ("retinanet_pcpvt_small", "infer"),
        ("retinanet_pcpvt_small", "train"),
        ("maskrcnn_svt_small", "train"),
    ],
)
def test_a_detector_is_timed_in_inference_and_in_training(capsys, model, mode):
    assert main(["benchmark", "--model", model, "--mode", mode, *TINY, *QUICK]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == model and result["mode"] == mode and result["image_size"] == 64
    (row,) = result["results"].values()
    assert row["images_per_s"] > 0 and row["step_ms"] > 0
    assert result["gmacs_per_image"] > 0
    factor = 3 if mode == "train" else 1
    assert result["gflops_per_image"] == pytest.approx(2 * factor * result["gmacs_per_image"])


def test_a_detector_compared_with_timm_is_one_line(capsys):
    args = ["benchmark", "--model", "retinanet_pcpvt_small", "--compare", "timm", *TINY, *QUICK]
    assert main(args) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert "timm has no detection models" in error and "without --compare" in error
