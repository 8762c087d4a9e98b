"""Runs counted in iterations (mmseg's IterBasedRunner, the segmentation recipes): evaluated
and kept every N iterations, ended within an epoch at `max_iters`, resumed exactly."""

from __future__ import annotations

import pytest
import torch

from killed_runs import fit_killed_at_step, without_timings
from twins.tasks import fit
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint
from twins.train.trainer import Trainer

# 4 steps per epoch at batch 16 on the tiny ImageFolder: 7 iterations end within epoch 2.
ITERATIONS = {"lr_scheduler": "poly_lr", "max_iters": 7, "warmup_iters": 2, "warmup_ratio": 0.1}
ITERATIONS |= {"min_lr": 0.0, "warmup_length": 0, "eval_every": 3, "save_every": 3, "log_every": 1}


def test_an_iteration_run_evaluates_keeps_and_stops_by_iteration(
    imagefolder, tiny_config, tmp_path
):
    output = tmp_path / "run"
    result = fit(tiny_config(imagefolder, output, **ITERATIONS))
    records = read_metrics(output / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6, 7]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 8))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    checkpoints = {p.name for p in (output / "checkpoints").iterdir()}
    assert {"iter_0000003.pt", "iter_0000006.pt", "last.pt", "best.pt"} <= checkpoints
    assert not any(name.startswith("epoch_") for name in checkpoints)
    last = load_checkpoint(output / "checkpoints" / "last.pt")
    assert last["global_step"] == 7 and "epoch_progress" not in last
    assert result["val_images"] == 14 and result["best_top1"] == result["best_score"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert result["best_score"] == max(r["val_top1"] for r in evals)
    assert result["val_top1"] == evals[-1]["val_top1"]
    # Run again: the run is finished, nothing more is trained.
    again = fit(tiny_config(imagefolder, output, **ITERATIONS))
    assert load_checkpoint(output / "checkpoints" / "last.pt")["global_step"] == 7
    assert again["best_score"] == result["best_score"]


def test_the_steps_after_an_evaluation_within_an_epoch_train_in_training_mode(
    imagefolder, tiny_config, tmp_path, monkeypatch
):
    modes, backward = [], Trainer.backward

    def recording_backward(trainer, *args, **kwargs):
        modes.append(trainer.model.training)
        return backward(trainer, *args, **kwargs)

    monkeypatch.setattr(Trainer, "backward", recording_backward)
    fit(tiny_config(imagefolder, tmp_path / "run", **ITERATIONS))
    assert modes == [True] * 7  # step 4 follows the evaluation after step 3, within epoch 1


@pytest.mark.parametrize("kill_before", [4, 7])  # after the step-3 evaluation; at the last step
def test_an_iteration_run_killed_within_an_epoch_resumes_exactly(
    imagefolder, tiny_config, tmp_path, kill_before
):
    unbroken = tmp_path / "unbroken"
    fit(tiny_config(imagefolder, unbroken, **ITERATIONS))
    output = tmp_path / "run"
    config = tiny_config(imagefolder, output, **ITERATIONS)
    fit_killed_at_step(config, kill_before)
    saved = load_checkpoint(output / "checkpoints" / "last.pt")
    assert saved["global_step"] == (3 if kill_before == 4 else 6)
    fit(config)

    assert without_timings(read_metrics(output / "metrics.jsonl")) == without_timings(
        read_metrics(unbroken / "metrics.jsonl")
    )
    a = load_checkpoint(unbroken / "checkpoints" / "last.pt")
    b = load_checkpoint(output / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
