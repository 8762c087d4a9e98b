"""scripts/gpu_benchmark.py on the CPU with small inputs: its table, its time budget, and a
failing case that leaves the others standing."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_benchmark.py"
SMALL = ["--device", "cpu", "--batch-size", "2", "--image-size", "32"]
SMALL += ["--warmup", "1", "--iters", "1", "--rounds", "1", "--eager-only"]
# float32: a CPU without AVX-512 BF16 or AMX emulates bfloat16 (the script's GPU default), and a
# 2048-wide bfloat16 matmul alone then takes half a minute.
SMALL += ["--precision", "fp32"]


@pytest.fixture
def gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(out: Path) -> tuple[dict, str]:
    return json.loads((out / "gpu_benchmark.json").read_text()), (
        out / "gpu_benchmark.md"
    ).read_text()


def test_writes_the_table_of_every_case(gpu_benchmark, tmp_path):
    assert gpu_benchmark.main(["--out", str(tmp_path), *SMALL, "--models", "svt_small"]) == 0
    report, table = _report(tmp_path)
    assert [(row["model"], row["mode"]) for row in report["rows"]] == [
        ("svt_small", "infer"),
        ("svt_small", "train"),
    ]
    assert report["skipped"] == [] and report["failed"] == []
    assert "| svt_small | infer | no |" in table and "| svt_small | train | no |" in table
    assert report["header"]["command"].endswith("--precision fp32 --models svt_small")
    assert f"Command: `{report['header']['command']}`" in table


def test_compiled_cases_run_model_by_model_after_the_eager_ones(gpu_benchmark):
    args = gpu_benchmark.parse_args(["--out", "x"])
    assert gpu_benchmark.cases(args) == [
        ("pcpvt_small", "infer", False),
        ("svt_small", "infer", False),
        ("pcpvt_small", "train", False),
        ("svt_small", "train", False),
        ("pcpvt_small", "infer", True),
        ("pcpvt_small", "train", True),
        ("svt_small", "infer", True),
        ("svt_small", "train", True),
    ]


def test_cases_past_the_budget_are_skipped_and_listed(gpu_benchmark, tmp_path):
    assert gpu_benchmark.main(["--out", str(tmp_path), *SMALL, "--budget-s", "1"]) == 0
    report, table = _report(tmp_path)
    assert report["rows"] == [] and len(report["skipped"]) == 4
    assert "Skipped (time budget): pcpvt_small infer, svt_small infer" in table


def test_a_failing_case_is_listed_and_the_others_still_run(gpu_benchmark, tmp_path, monkeypatch):
    real = gpu_benchmark.run_benchmark

    def train_fails(options):
        if options.mode == "train":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(options)

    monkeypatch.setattr(gpu_benchmark, "run_benchmark", train_fails)
    args = ["--out", str(tmp_path), *SMALL, "--models", "pcpvt_small"]
    assert gpu_benchmark.main(args) == 0
    report, table = _report(tmp_path)
    assert [row["mode"] for row in report["rows"]] == ["infer"]
    assert report["failed"] == [
        "pcpvt_small train (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)"
    ]
    assert "Failed: pcpvt_small train (RuntimeError: CUDA out of memory" in table
