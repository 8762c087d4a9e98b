"""`twins benchmark` of a segmenter against segmentation-models-pytorch's UperNet over timm's
Twins encoder (the `smp` extra)."""

from __future__ import annotations

import json

import pytest

from twins.cli.main import main

TINY = ["--model-args", '{"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}']
QUICK = ["--device", "cpu", "--image-size", "32", "--batch-size", "1"]
QUICK += ["--warmup", "0", "--iters", "1", "--rounds", "1", "--json"]


@pytest.mark.slow  # two UperNets of 512-channel heads: a minute on a small CPU
def test_upernet_is_timed_beside_smps(capsys):
    pytest.importorskip("segmentation_models_pytorch")
    assert (
        main(["benchmark", "--model", "upernet_pcpvt_small", "--compare", "smp"] + TINY + QUICK)
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["results"].keys() == {"ours", "smp"} and result["reference"] == "smp"
    assert result["ratio"] > 0 and result["gmacs_per_image"] > 0


@pytest.mark.parametrize(
    ("model", "compare", "told"),
    [
        ("semantic_fpn_pcpvt_small", "smp", "benchmark an upernet_<variant> model"),
        ("upernet_pcpvt_small", "timm", "timm has no segmentation models"),
    ],
)
def test_a_comparison_that_cannot_be_made_is_one_line(capsys, model, compare, told):
    assert main(["benchmark", "--model", model, "--compare", compare] + TINY + QUICK) == 2
    assert told in capsys.readouterr().err
