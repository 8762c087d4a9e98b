"""The order of an epoch over a packed data set: shuffled by blocks of shards, so that a bounded
cache of whole shards suffices.

A full permutation of a data set read from shards would touch every shard all the time, and so
need every shard at hand. Here the shards are permuted from (seed, epoch) and taken in blocks of
`block` shards; the samples of each block are permuted among themselves. At any moment the
readers need the shards of one block (and the next, fetched ahead), not all of them. A larger
block mixes better (a sample meets those of more shards in its batches) and needs a larger
cache; the packer already shuffled the samples across classes, so even a block of one shard
gives batches of mixed classes.

The order is a function of (seed, epoch, shard sizes, block) only: the processes and loader
workers that read it do not change it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from twins.seeds import derive_seed


def shard_sequence(shard_count: int, seed: int, epoch: int) -> list[int]:
    """The shards in the order `epoch` reads them."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
    return torch.randperm(shard_count, generator=generator).tolist()


def block_order(shard_sizes: Sequence[int], seed: int, epoch: int, block: int) -> list[int]:
    """The sample indices of `epoch` (samples numbered shard after shard): the shards permuted,
    taken `block` at a time, the samples of each block permuted among themselves."""
    starts = [0]
    for size in shard_sizes:
        starts.append(starts[-1] + size)
    shards = shard_sequence(len(shard_sizes), seed, epoch)
    order: list[int] = []
    for number, first in enumerate(range(0, len(shards), block)):
        members = torch.cat(
            [torch.arange(starts[s], starts[s + 1]) for s in shards[first : first + block]]
        )
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 1, number))
        order += members[torch.randperm(len(members), generator=generator)].tolist()
    return order
