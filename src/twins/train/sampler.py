"""The order of the training images: shuffled per epoch, dealt to the processes, resumable.

Each epoch's order is a permutation of the training set drawn from (seed, epoch). Its places are
dealt to the processes in turn (place p to rank p % world), as torch's `DistributedSampler`
does with `drop_last`, and the tail that would leave ranks unequal is dropped. After k batches of
b images on each of w processes, exactly the places 0 .. k·b·w − 1 are done, whatever the rank;
`start_at(k·b·w)` makes the epoch go on from there, so a run stopped within an epoch and
started again sees the rest of the order the unbroken run saw.

A packed data set is read in blocks of shards (`ShardBlockSampler`, `twins.data.order`): the
same dealing and resume, over an order that needs only a few shards at a time; a Parquet set
in windows of row groups within such blocks (`RowGroupSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

from twins.data.order import block_order, window_order
from twins.seeds import derive_seed


class ResumableSampler(Sampler[int]):
    """Indices of one process's share of the epoch, from place `start` of the epoch's order."""

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.size, self.rank, self.world_size, self.seed = len(dataset), rank, world_size, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """The order of `epoch`, from its beginning."""
        self.epoch, self.start = epoch, 0

    def start_at(self, samples_done: int) -> None:
        """Leave out the first `samples_done` places of this epoch's order (all processes)."""
        if not 0 <= samples_done <= self.size:
            raise ValueError(f"{samples_done} samples done is outside an epoch of {self.size}")
        self.start = samples_done

    def order(self) -> list[int]:
        """The whole epoch's order, the same in every process."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        rest = self.order()[self.start :]
        return iter(rest[self.rank : len(self) * self.world_size : self.world_size])

    def __len__(self) -> int:
        return (self.size - self.start) // self.world_size


class ShardBlockSampler(ResumableSampler):
    """`ResumableSampler` over a packed data set: the epoch's order takes the shards (of
    `shard_sizes` samples) in blocks of `block`, shuffled within each block."""

    def __init__(
        self,
        shard_sizes: list[int],
        block: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(range(sum(shard_sizes)), rank, world_size, seed)
        self.shard_sizes, self.block = list(shard_sizes), block

    def order(self) -> list[int]:
        return block_order(self.shard_sizes, self.seed, self.epoch, self.block)


class RowGroupSampler(ShardBlockSampler):
    """`ShardBlockSampler` over a Parquet set: its files (of `group_sizes` rows per row group)
    in blocks of `block`, the row groups of each block in windows of `window` rows, shuffled
    within each window."""

    def __init__(
        self,
        group_sizes: list[list[int]],
        block: int,
        window: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__([sum(g) for g in group_sizes], block, rank, world_size, seed)
        self.group_sizes, self.window = [list(g) for g in group_sizes], window

    def order(self) -> list[int]:
        return window_order(self.group_sizes, self.seed, self.epoch, self.block, self.window)


def training_sampler(
    dataset: Sized, rank: int, world_size: int, seed: int, block: int
) -> ResumableSampler:
    """The training order of `dataset`: by blocks of shards for a packed data set (it has
    `shard_sizes`), and windows of row groups within them for a Parquet set (`group_sizes`,
    `group_window`), a full shuffle otherwise."""
    inner = getattr(dataset, "dataset", dataset)
    groups = getattr(inner, "group_sizes", None)
    if groups is not None:
        return RowGroupSampler(groups, block, inner.group_window, rank, world_size, seed)
    sizes = getattr(inner, "shard_sizes", None)
    if sizes is not None:
        return ShardBlockSampler(sizes, block, rank, world_size, seed)
    return ResumableSampler(dataset, rank, world_size, seed)
