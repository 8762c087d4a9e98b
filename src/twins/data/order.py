"""The order of an epoch over a packed data set: shuffled by blocks of shards, so that a bounded
cache of whole shards suffices.

A full permutation of a data set read from shards would touch every shard all the time, and so
need every shard at hand. Here the shards are permuted from (seed, epoch) and taken in blocks of
`block` shards; the samples of each block are permuted among themselves. At any moment the
readers need the shards of one block (and the next, fetched ahead), not all of them. A larger
block mixes better (a sample meets those of more shards in its batches) and needs a larger
cache; the packer already shuffled the samples across classes, so even a block of one shard
gives batches of mixed classes.

A Parquet set's files are its shards, made of row groups: `window_order` takes the row groups
of each block in windows, so that a reader needs only a window's row groups at a time.

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


def window_order(
    group_sizes: Sequence[Sequence[int]], seed: int, epoch: int, block: int, window: int
) -> list[int]:
    """The sample indices of `epoch` for files made of row groups (`group_sizes[f]`: the rows
    of each group of file f; samples numbered file after file): the files permuted and taken
    `block` at a time, as `block_order` takes shards; the row groups of each block permuted and
    taken in windows of at least `window` rows; the samples of each window permuted among
    themselves. A reader then needs the row groups of one window at a time, not of a block:
    a row group is the least a Parquet file can be read by."""
    starts, first_row = [], 0
    for sizes in group_sizes:
        starts.append([])
        for size in sizes:
            starts[-1].append((first_row, size))
            first_row += size
    files = shard_sequence(len(group_sizes), seed, epoch)
    order: list[int] = []
    for number, first in enumerate(range(0, len(files), block)):
        groups = [group for f in files[first : first + block] for group in starts[f]]
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 2, number))
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        windows: list[list[tuple[int, int]]] = [[]]
        for group in groups:
            if sum(size for _, size in windows[-1]) >= window:
                windows.append([])
            windows[-1].append(group)
        for place, members in enumerate(w for w in windows if w):
            rows = torch.cat([torch.arange(start, start + size) for start, size in members])
            generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 3, number, place))
            order += rows[torch.randperm(len(rows), generator=generator)].tolist()
    return order
