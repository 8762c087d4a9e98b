"""scripts/cpu_benchmark.py with small inputs: the goal table, the parts tables and the loader."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu_benchmark.py"
SMALL = ["--batch-size", "2", "--image-size", "32", "--iters", "1", "--rounds", "1"]


@pytest.fixture
def cpu_benchmark():
    spec = importlib.util.spec_from_file_location("cpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_the_goals_and_where_each_step_goes(cpu_benchmark, tmp_path):
    args = ["--out", str(tmp_path), *SMALL, "--models", "svt_small"]
    args += ["--loader-runs", "1", "--loader-batches", "1"]
    assert cpu_benchmark.main(args) == 0
    report = json.loads((tmp_path / "cpu_benchmark.json").read_text())
    table = (tmp_path / "cpu_benchmark.md").read_text()
    assert [(row["model"], row["mode"], row["threads"]) for row in report["rows"]] == [
        ("svt_small", "infer", 1),
        ("svt_small", "train", 1),
    ]
    assert len(report["loader"]) == 1 and report["loader"][0]["reference"] == "timm"
    assert (tmp_path / "bench-images").is_dir()  # written for the loader
    assert table.startswith(f"CPU: {report['header']['cpu']};")
    for measure, goal in [("SVT-S inference", "1.3x"), ("SVT-S training", "1.15x")]:
        line = next(line for line in table.splitlines() if line.startswith(f"| {measure} |"))
        assert f"| {goal} |" in line and ("| met |" in line or "| not met |" in line)
    assert "| loader, 2 workers |" in table and "| 1.5x |" in table
    # one parts table per case, each with attention, MLP and a total
    assert table.count("ms per step | ours fwd | ours bwd | timm fwd | timm bwd |") == 2
    assert table.count("| attention (LSA) |") == 2 and table.count("| total |") == 2


def test_skip_loader_measures_the_models_only(cpu_benchmark, tmp_path):
    args = ["--out", str(tmp_path), *SMALL, "--models", "pcpvt_small", "--skip-loader"]
    assert cpu_benchmark.main(args) == 0
    report = json.loads((tmp_path / "cpu_benchmark.json").read_text())
    assert report["loader"] == [] and len(report["rows"]) == 2
    assert not (tmp_path / "bench-images").exists()
