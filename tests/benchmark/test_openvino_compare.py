"""`twins benchmark --compare openvino`: ours eager, the OpenVINO IR in float32 and in int8 on
the same batch, alternated; `ratio` is OpenVINO float32's throughput over ours."""

from __future__ import annotations

import json
import statistics

import pytest

from twins.benchmark.report import format_report
from twins.benchmark.run import _ratio
from twins.benchmark.timing import Timing
from twins.cli.main import main

TINY = ["--model-args", '{"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}']
QUICK = ["--device", "cpu", "--image-size", "32", "--batch-size", "2"]
QUICK += ["--warmup", "1", "--iters", "1", "--rounds", "2"]


@pytest.mark.slow  # NNCF's quantisation and two compilations: a minute on a shared small CPU
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


def test_the_report_names_the_direction_of_the_ratio():
    timings = {
        "ours": Timing([0.2, 0.3, 0.2]),
        "openvino": Timing([0.1, 0.1, 0.2]),
        "openvino_int8": Timing([0.05, 0.1, 0.1]),
    }
    ratios = _ratio(timings, "openvino")
    assert ratios["ratios"] == pytest.approx([2.0, 3.0, 1.0]) and ratios["ratio"] == pytest.approx(
        2.0
    )
    assert ratios["int8_ratios"] == pytest.approx([4.0, 3.0, 2.0]) and ratios[
        "int8_ratio"
    ] == pytest.approx(3.0)
    rows = {"images_per_s": 1.0, "step_ms": 1.0, "tflops": 0.1, "peak_fraction": None}
    rows |= {"page_faults_per_step": 0.0}
    result = {
        "device_name": "CPU", "threads": 1, "precision": "fp32", "batch_size": 1,
        "cpu": {"model": "CPU", "extensions": ["avx2"], "torch_kernels": "AVX2"},
        "image_size": 32, "channels_last": False, "compile": False, "model": "pcpvt_small",
        "mode": "infer", "device": "cpu", "gmacs_per_image": 1.0, "gflops_per_image": 2.0,
        "peak_tflops": None, "peak_source": "not measured", "memory_kind": "RSS",
        "results": {name: rows | {"peak_memory_mib": 1.0} for name in timings},
        **ratios,
    }  # fmt: skip
    printed = format_report(result)
    assert (
        "openvino / ours: 2.00x images/s (median of 3 alternated rounds: 2.00 3.00 1.00)" in printed
    )
    assert "openvino_int8 / ours: 3.00x" in printed and "calibrated on random inputs" in printed


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
