"""What each command hands the library: overrides in order, the EMA rule, constants that the
parsers write out to stay light."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from twins.cli import benchmark, export
from twins.cli.main import main

DEMO_RECIPE = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
RESULT = {"top1": 50.0, "top5": 100.0, "loss": 1.0, "images": 2, "arch": "pcpvt_small"}


def test_the_written_out_choices_are_the_library_ones():
    import twins.benchmark
    import twins.export.engine

    assert export.FORMATS == twins.export.engine.EXPORT_FORMATS
    assert benchmark.MODES == twins.benchmark.MODES
    assert benchmark.PRECISIONS == twins.benchmark.PRECISIONS


def test_train_takes_overrides_among_its_options(monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr("twins.train.fit", lambda config, task: trained.append(config))
    argv = [
        "train",
        "epochs=9",
        "-c",
        DEMO_RECIPE,
        "seed=7",
        "--output",
        str(tmp_path / "run"),
        "epochs=8",
        "--data",
        str(tmp_path),
    ]
    assert main(argv) == 0
    (config,) = trained
    assert (config.epochs, config.seed) == (8, 7)  # later overrides win, as always
    assert config.train_url == str(tmp_path / "run") and config.data_url == str(tmp_path)


@pytest.fixture
def evaluated(monkeypatch):
    """The configs `twins eval` evaluates with, and the EMA weights it requires of the file,
    without a model."""
    seen: dict[str, list] = {"configs": [], "ema_loads": []}

    def evaluate_checkpoint(config, checkpoint, task, *, ema=None):
        seen["configs"].append(config)
        if ema is not None:
            seen["ema_loads"].append(ema)
        return RESULT

    monkeypatch.setattr("twins.train.evaluate.evaluate_checkpoint", evaluate_checkpoint)
    return seen


EVAL = ["eval", "-c", DEMO_RECIPE, "--checkpoint", "w.pt"]


def test_eval_ema_flag_means_with_ema(evaluated):
    assert main([*EVAL, "--ema"]) == 0
    assert evaluated["configs"][-1].with_ema is True and evaluated["ema_loads"] == [True]


def test_eval_without_ema_flag_follows_the_config(evaluated):
    assert main(EVAL) == 0
    assert evaluated["configs"][-1].with_ema is False
    assert main([*EVAL, "with_ema=true"]) == 0
    assert evaluated["configs"][-1].with_ema is True
    assert evaluated["ema_loads"] == []  # only --ema asks that the file hold EMA weights


def test_eval_arch_sets_the_config_arch(evaluated):
    assert main([*EVAL, "--arch", "svt_small", "model_args={}"]) == 0
    assert evaluated["configs"][-1].arch == "svt_small"


def test_eval_ema_refuses_a_file_without_ema_weights(tmp_path, capsys):
    torch.save({"model": {"head.weight": torch.zeros(2, 4)}}, tmp_path / "w.pt")
    argv = ["eval", "-c", DEMO_RECIPE, "--data", str(tmp_path), "--ema"]
    assert main([*argv, "--checkpoint", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twins: error: ") and "holds no EMA weights" in err
    assert len(err.splitlines()) == 1
