"""Non-finite losses: a step with a NaN loss is skipped and counted, many in a row stop the run
with one line, and weights that have become non-finite are never written."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import twins.train.trainer
from factories import TINY_MODEL, make_config
from twins import create_model
from twins.cli.main import main
from twins.errors import TwinsError
from twins.tasks import fit
from twins.train import Trainer, resume, save_config
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

fit_module = importlib.import_module("twins.train.fit_loop")


def poison_training_steps(monkeypatch, steps: set[int] | range) -> None:
    """The model's training forward passes number `steps` (1-based) return NaN logits."""
    real_build = fit_module.build_model
    calls = []

    def poison(module, inputs, output):
        if module.training:
            calls.append(1)
            if len(calls) in steps:
                return output * math.nan
        return output

    def build_model(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(fit_module, "build_model", build_model)


def test_nan_steps_are_skipped_counted_and_the_run_goes_on(
    imagefolder, tiny_config, tmp_path, monkeypatch
):
    poison_training_steps(monkeypatch, {2, 6, 7})  # 4 steps per epoch
    result = fit(tiny_config(imagefolder, tmp_path, epochs=2, with_ema=True))
    epochs = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["skipped_steps"] for r in epochs] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in epochs)
    assert result["val_top1"] >= 50.0  # it still learns (chance is 25%)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key in ("model", "model_ema"):
        assert all(torch.isfinite(t).all() for t in last[key].values())


def test_many_nan_steps_in_a_row_stop_the_run_in_one_line(
    imagefolder, tiny_config, tmp_path, monkeypatch, capsys
):
    poison_training_steps(monkeypatch, range(6, 100))  # from step 6, within epoch 2
    config = tiny_config(imagefolder, tmp_path / "run", max_nonfinite_steps=3, save_every_steps=1)
    save_config(config, tmp_path / "recipe.yaml")
    capsys.readouterr()
    assert main(["train", "-c", str(tmp_path / "recipe.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "stopped at epoch 2, step 8: the last 3 steps in a row" in err
    assert "lower base_lr" in err
    # The run's log ends as the terminal did (the flag that sets the key aside).
    assert err.startswith((tmp_path / "run" / "run.log").read_text().splitlines()[-1])
    # The last checkpoint is of the last good step, and resuming from it is possible.
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["global_step"] == 7 and last["nonfinite_run"] == 2


def test_non_finite_weights_are_never_written(imagefolder, tiny_config, tmp_path, monkeypatch):
    # A finite update that nevertheless leaves a weight infinite (as a huge learning rate can).
    real_step = twins.train.trainer.optimizer_step
    calls = []

    def optimizer_step(optimizer, *args, **kwargs):
        finite = real_step(optimizer, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].fill_(math.inf)
        return finite

    monkeypatch.setattr(twins.train.trainer, "optimizer_step", optimizer_step)
    config = tiny_config(imagefolder, tmp_path, save_every_steps=1)
    with pytest.raises(TwinsError, match="the model at step 3 holds non-finite values") as error:
        fit(config)
    assert "\n" not in str(error.value)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == 2


def test_the_checkpoint_of_a_diverged_model_or_ema_is_refused():
    """The checkpoint of a diverged model (or EMA) is refused before anything is written."""
    config = make_config(with_ema=True, ema_decay=0.9)
    model = create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    trainer = Trainer(config, model, steps_per_epoch=1)
    resume.checkpoint(trainer, None, {})  # finite: fine
    with torch.no_grad():
        trainer.ema.module.head.bias[0] = float("inf")
    with pytest.raises(TwinsError, match="EMA model"):
        resume.checkpoint(trainer, None, {})
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(TwinsError, match="the model at step 0 holds non-finite"):
        resume.checkpoint(trainer, None, {})
