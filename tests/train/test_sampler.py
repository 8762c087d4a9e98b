"""The resumable training order and the per-sample augmentation seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from factories import make_config
from twins.data import build_loader
from twins.train.sample_seeds import SampleSeededDataset
from twins.train.sampler import ResumableSampler, ShardBlockSampler


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


@pytest.mark.parametrize("workers", [0, 1])
def test_the_training_loader_draws_what_each_sample_draws_alone(workers):
    # Under the loader's own states (in its worker, or in this process while it fetches) the
    # sample's states are only seeded, not saved and put back: the same draws, and the
    # caller's states as they were.
    dataset = SampleSeededDataset(Draws(), seed=3)
    dataset.set_epoch(2)
    alone = sorted(dataset[i] for i in range(10))
    loader = build_loader(dataset, make_config(batch_size=5, num_parallel_workers=workers), True)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    batches = list(loader)
    assert (random.random(), np.random.rand(), torch.rand(())) == expected
    drawn = [tuple(map(float, sample)) for batch in batches for sample in zip(*batch, strict=True)]
    assert sorted(drawn) == alone


SHARD_SIZES = [5, 7, 6, 6, 4, 7]  # 35 samples in 6 shards


def block_shares(world: int, epoch: int = 0, start: int = 0, block: int = 2) -> list[list[int]]:
    samplers = [ShardBlockSampler(SHARD_SIZES, block, rank, world, seed=7) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
        sampler.start_at(start)
    return [list(sampler) for sampler in samplers]


def shard_of(index: int) -> int:
    return next(s for s in range(len(SHARD_SIZES)) if index < sum(SHARD_SIZES[: s + 1]))


def test_a_packed_epoch_reads_each_block_of_shards_whole_before_the_next():
    order = ShardBlockSampler(SHARD_SIZES, 2, seed=7).order()
    assert sorted(order) == list(range(35))
    shards = [shard_of(i) for i in order]
    blocks = []
    for shard in shards:  # the shards met, block by block: each block's two, then the next two
        if not blocks or (shard not in blocks[-1] and len(blocks[-1]) == 2):
            blocks.append([])
        if shard not in blocks[-1]:
            blocks[-1].append(shard)
    assert len(blocks) == 3 and sorted(s for b in blocks for s in b) == list(range(6))
    assert order != ShardBlockSampler(SHARD_SIZES, 3, seed=7).order()  # the block is part of it


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_with_loader_workers_read_every_training_sample_once(workers):
    seen = []
    for rank in range(2):
        sampler = ShardBlockSampler(SHARD_SIZES, 2, rank, 2, seed=7)
        sampler.set_epoch(3)
        loader = DataLoader(range(35), batch_size=4, sampler=sampler, num_workers=workers)
        seen += [i for batch in loader for i in batch.tolist()]
    order = ShardBlockSampler(SHARD_SIZES, 2, seed=7)
    order.set_epoch(3)
    assert sorted(seen) == sorted(order.order()[:34])  # the uneven tail of one left out


def test_a_packed_epoch_resumed_within_goes_on_as_the_unbroken_one():
    unbroken = block_shares(2, epoch=1)
    resumed = block_shares(2, epoch=1, start=12)
    assert [r[6:] for r in unbroken] == resumed
    assert block_shares(2, epoch=1) != block_shares(2, epoch=2)
    rest = [i for part in block_shares(3, epoch=1, start=12) for i in part]
    assert not set(rest) & {i for part in unbroken for i in part[:6]} and len(rest) == 21


def test_validation_shards_hold_each_image_once(tmp_path, imagefolder):
    from twins.data.packed.reader import ShardDataset
    from twins.data.packed.writer import pack
    from twins.train.distributed import ShardSampler

    pack(imagefolder, str(tmp_path / "packed"), shard_size=20_000, workers=1)
    val = ShardDataset(str(tmp_path / "packed"), "val")
    for world in (2, 3):
        seen = [i for rank in range(world) for i in ShardSampler(val, rank, world)]
        assert sorted(seen) == list(range(14))
