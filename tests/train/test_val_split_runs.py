"""A run with `val_split`: its config.yaml and checkpoints carry the split, evaluation reads the
images it held out, and a resume that would draw another split is refused."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from factories import write_imagefolder
from twins.errors import TwinsError
from twins.tasks import evaluate_checkpoint, fit


def test_a_run_with_val_split_keeps_its_split_for_eval_and_resume(tiny_config, tmp_path):
    data = write_imagefolder(tmp_path / "data")
    shutil.rmtree(data / "val")
    output = tmp_path / "run"
    config = tiny_config(data, output, epochs=1, val_split=0.25, seed=5)
    fit(config)
    assert yaml.safe_load((output / "config.yaml").read_text())["val_split"] == 0.25
    last = torch.load(output / "checkpoints" / "last.pt", weights_only=True)
    assert (last["config"]["val_split"], last["config"]["seed"]) == (0.25, 5)
    result = evaluate_checkpoint(config, output / "checkpoints" / "last.pt")
    assert result["images"] == 16  # a quarter of the 64 training images
    with pytest.raises(TwinsError, match="seed=6 would hold out other training images"):
        fit(tiny_config(data, output, epochs=2, val_split=0.25, seed=6))
