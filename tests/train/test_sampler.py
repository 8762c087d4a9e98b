"""The resumable training order and the per-sample augmentation seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import ResumableSampler


def shares(size: int, world: int, epoch: int = 0, start: int = 0) -> list[list[int]]:
    samplers = [ResumableSampler(range(size), rank, world, seed=7) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
        sampler.start_at(start)
    return [list(sampler) for sampler in samplers]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_processes_share_the_epoch_order_without_overlap(world):
    parts = shares(23, world)
    order = ResumableSampler(range(23), seed=7).order()
    used = 23 - 23 % world  # the tail that would leave processes unequal is dropped
    assert sorted(i for part in parts for i in part) == sorted(order[:used])
    assert {len(part) for part in parts} == {used // world}
    assert sorted(order) == list(range(23))


def test_each_epoch_has_its_own_order_and_repeats_it():
    assert shares(20, 2, epoch=1) == shares(20, 2, epoch=1)
    assert shares(20, 2, epoch=1) != shares(20, 2, epoch=2)


@pytest.mark.parametrize(("world", "batch", "batches_done"), [(1, 4, 3), (2, 3, 2), (3, 2, 1)])
def test_an_epoch_resumed_after_some_batches_goes_on_as_the_unbroken_one(
    world, batch, batches_done
):
    unbroken = shares(23, world, epoch=4)
    resumed = shares(23, world, epoch=4, start=batches_done * batch * world)
    for rank in range(world):
        assert resumed[rank] == unbroken[rank][batches_done * batch :]


def test_resumed_with_another_world_size_the_epoch_has_no_image_twice():
    done = shares(24, 2, epoch=0)
    first = [i for part in done for i in part[:4]]  # 4 images done by each of 2 processes
    rest = [i for part in shares(24, 3, epoch=0, start=8) for i in part]
    assert not set(first) & set(rest)
    assert len(rest) == 15  # 16 left for 3 processes: 5 each


class Draws(Dataset):
    """Each item is what the three random sources give, as an augmentation would draw."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        return random.random(), float(np.random.rand()), torch.rand(()).item()


def test_each_sample_draws_from_its_own_seed_whatever_came_before():
    dataset = SampleSeededDataset(Draws(), seed=3)
    dataset.set_epoch(2)
    in_order = [dataset[i] for i in range(10)]
    assert [dataset[i] for i in reversed(range(10))] == in_order[::-1]
    assert len(set(in_order)) == 10
    dataset.set_epoch(3)
    assert dataset[0] != in_order[0]
    # The caller's random states are as they were.
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    dataset[5]
    assert (random.random(), np.random.rand(), torch.rand(())) == expected
