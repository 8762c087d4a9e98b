"""The trackers' shared parts: the names every tracker shows, and a tracker whose package is
missing refused before anything starts."""

from __future__ import annotations

import pytest

from twins.errors import TwinsError
from twins.tasks import fit
from twins.train import trackers
from twins.train.trackers import scalars


def test_every_tracker_shows_a_record_under_the_same_names():
    step = {"kind": "step", "epoch": 1, "step": 4, "train_loss": 1.5, "lr": 0.001}
    epoch = {"kind": "epoch", "epoch": 1, "step": 8, "train_loss": 1.2, "val_top1": 50.0}
    evaluation = {"kind": "eval", "epoch": 1, "step": 8, "val_mIoU": 20.0, "ema_val_mIoU": 21.0}
    assert scalars(step) == {"train/train_loss": 1.5, "train/lr": 0.001}
    assert scalars(epoch | {"val_loss": None}) == {"epoch/train_loss": 1.2, "val/top1": 50.0}
    assert scalars(evaluation) == {"val/mIoU": 20.0, "eval/ema_val_mIoU": 21.0}


def test_a_tracker_without_its_package_is_refused_before_anything_starts(
    imagefolder, tiny_config, tmp_path, monkeypatch
):
    monkeypatch.setitem(trackers.PACKAGES, "wandb", "a_package_that_is_not_installed")
    output = tmp_path / "run"
    with pytest.raises(TwinsError, match=r"pip install 'twins\[track\]', or leave wandb out"):
        fit(tiny_config(imagefolder, output, loggers=["tensorboard", "wandb"]))
    assert not output.exists()
