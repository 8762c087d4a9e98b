"""Training from WebDataset shards indexed in place (`twins pack --index-only`): a run killed
within an epoch resumes to the unbroken run's weights bit for bit, as from packed shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from factories import EVERY_RANDOM_DRAW
from killed_runs import fit_killed_at_step
from twins.data.packed.indexer import index_shards
from twins.data.packed.reader import ShardDataset
from twins.tasks import fit
from twins.tasks.classify.data import build_datasets
from twins.train.resume import load_checkpoint
from wds_shards import write_timm_shards

RECIPE = EVERY_RANDOM_DRAW | {"cooldown_epochs": 0, "batch_size": 8, "save_every_steps": 3}
RECIPE |= {"shuffle_block": 2}


@pytest.fixture(scope="module")
def indexed(imagefolder, tmp_path_factory) -> Path:
    shards = write_timm_shards(imagefolder, tmp_path_factory.mktemp("wds"), per_shard=8)
    index_shards(str(shards))
    return shards


def test_a_run_killed_within_an_epoch_resumes_to_the_unbroken_weights(
    indexed, tiny_config, tmp_path
):
    train, _, _ = build_datasets(tiny_config(indexed, tmp_path, **RECIPE))
    assert isinstance(train, ShardDataset) and train.shard_sizes == [8] * 8
    fit(tiny_config(indexed, tmp_path / "unbroken", **RECIPE))
    config = tiny_config(indexed, tmp_path / "run", **RECIPE)
    fit_killed_at_step(config, 11)  # within epoch 2, after its checkpoint of step 9
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 9
    result = fit(config)
    assert result["epoch"] == 2 and result["val_images"] == 14
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert a["metrics"]["train_loss"] == b["metrics"]["train_loss"]
