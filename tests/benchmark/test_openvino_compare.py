"""`twins benchmark --compare openvino`: ours eager, the OpenVINO IR in float32 and in int8 on
the same batch, alternated; `ratio` is OpenVINO float32's throughput over ours."""

from __future__ import annotations

import json
import statistics

import pytest

from twins.cli.main import main

TINY = ["--model-args", '{"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}']
QUICK = ["--device", "cpu", "--image-size", "32", "--batch-size", "2"]
QUICK += ["--warmup", "1", "--iters", "1", "--rounds", "2"]


def test_compare_openvino_times_float32_and_int8_against_ours(capsys):
    assert main(["benchmark", "--compare", "openvino", *TINY, *QUICK, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["results"]) == {"ours", "openvino", "openvino_int8"}
    times = {name: row["step_ms_per_round"] for name, row in result["results"].items()}
    expected = [o / v for o, v in zip(times["ours"], times["openvino"], strict=True)]
    assert result["ratios"] == pytest.approx(expected)
    assert result["ratio"] == pytest.approx(statistics.median(expected))
    int8 = [o / v for o, v in zip(times["ours"], times["openvino_int8"], strict=True)]
    assert result["int8_ratio"] == pytest.approx(statistics.median(int8))
    assert "random inputs" in result["int8_note"]


def test_the_report_names_the_direction_of_the_ratio(capsys):
    assert main(["benchmark", "--compare", "openvino", *TINY, *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "openvino / ours: " in printed and "openvino_int8 / ours: " in printed
    assert "int8 calibrated on random inputs" in printed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "train"], "compare openvino times float32 inference on the CPU"),
        (["--precision", "bf16"], "compare openvino times float32 inference on the CPU"),
        (
            ["--model", "upernet_pcpvt_small"],
            "the OpenVINO comparison times classifiers, not segmentation",
        ),
    ],
)
def test_what_openvino_does_not_time_is_refused_in_one_line(capsys, args, message):
    assert main(["benchmark", "--compare", "openvino", *TINY, *QUICK, *args]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
