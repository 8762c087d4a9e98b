"""Training from a Parquet set in the Hub's layout: the same batches with or without loader
workers, and a run killed within an epoch resumes to the unbroken run's weights bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import twins.data.parquet.reader
from factories import EVERY_RANDOM_DRAW
from hub_parquet import imagefolder_to_parquet
from killed_runs import fit_killed_at_step
from twins.data import build_loader
from twins.tasks import fit
from twins.tasks.classify.data import build_datasets
from twins.train.resume import load_checkpoint
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import RowGroupSampler, training_sampler

# Every source of randomness on, 2 epochs of 8 steps, a checkpoint every 3 steps; the 64
# training rows in 4 files of 4 row groups, read 2 files at a time, in windows of 2 groups.
RECIPE = EVERY_RANDOM_DRAW | {"cooldown_epochs": 0, "batch_size": 8, "save_every_steps": 3}
RECIPE |= {"shuffle_block": 2}


@pytest.fixture(autouse=True)
def small_windows(monkeypatch):
    monkeypatch.setattr(twins.data.parquet.reader, "GROUP_WINDOW", 8)


@pytest.fixture(scope="module")
def parquet_set(imagefolder, tmp_path_factory) -> Path:
    return imagefolder_to_parquet(
        imagefolder, tmp_path_factory.mktemp("hub"), {"train": 4, "val": 2}, row_group_size=4
    )


def epoch_batches(config, epoch: int) -> list:
    train, _, _ = build_datasets(config)
    assert train.group_window == 8
    samples = SampleSeededDataset(train, config.seed)
    sampler = training_sampler(samples, 0, 1, config.seed, config.shuffle_block)
    assert isinstance(sampler, RowGroupSampler) and sampler.group_sizes == [[4] * 4] * 4
    loader = build_loader(samples, config, train=True, sampler=sampler)
    samples.set_epoch(epoch)
    loader.set_epoch(epoch)
    return list(loader)


def test_the_same_batches_with_and_without_loader_workers(parquet_set, tiny_config, tmp_path):
    alone = epoch_batches(tiny_config(parquet_set, tmp_path, **RECIPE), 1)
    workers = epoch_batches(tiny_config(parquet_set, tmp_path, **RECIPE, num_parallel_workers=2), 1)
    assert len(alone) == len(workers) == 8
    for ((images, erasing), targets), ((other_images, other_erasing), other_targets) in zip(
        alone, workers, strict=True
    ):
        assert torch.equal(images, other_images) and torch.equal(erasing, other_erasing)
        assert torch.equal(targets, other_targets)


def test_a_run_killed_within_an_epoch_resumes_to_the_unbroken_weights(
    parquet_set, tiny_config, tmp_path
):
    fit(tiny_config(parquet_set, tmp_path / "unbroken", **RECIPE))
    config = tiny_config(parquet_set, tmp_path / "run", **RECIPE)
    fit_killed_at_step(config, 11)  # within epoch 2, after its checkpoint of step 9
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 9
    result = fit(config)
    assert result["epoch"] == 2 and result["val_images"] == 14
    a = load_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert a["metrics"]["train_loss"] == b["metrics"]["train_loss"]
