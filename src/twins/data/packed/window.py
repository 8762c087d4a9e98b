"""Which files of a data set read through a node cache a process holds: the block of the
epoch's order it reads and the next, fetched ahead (`twins.data.order`).

Shared by every reader of whole files behind a URL (packed shards, Parquet files): the reader
tells the window which file a sample lies in; on the first read of a new block, the window holds
that block and the next in the cache (fetching them ahead), lets go of the rest, and says which
files the reader may keep open (a released file may be evicted; an open one would keep its disk
space taken).
"""

from __future__ import annotations

from twins.data.order import shard_sequence
from twins.data.packed.cache import ShardCache


class CacheWindow:
    """The window over `names` (the files in the data set's numbering) in the order of
    (seed, epoch) when `shuffled`, else in their own order, `block` files at a time."""

    def __init__(
        self, names: list[str], cache: ShardCache, seed: int, block: int, shuffled: bool
    ) -> None:
        self.names, self.cache = names, cache
        self.seed, self.block, self.shuffled = seed, max(1, block), shuffled
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        count = len(self.names)
        order = shard_sequence(count, self.seed, epoch) if self.shuffled else list(range(count))
        self._sequence = order
        self._place = {number: place for place, number in enumerate(order)}
        self.reset()

    def reset(self) -> None:
        """Forget the block being read: a new process (a forked worker) starts again."""
        self._block = -1

    def enter(self, number: int) -> set[int] | None:
        """Before reading file `number`: None within the block being read; on a new block, the
        files to keep open (those of this block and the next; the others are to be closed)."""
        block = self._place[number] // self.block
        if block == self._block:
            return None
        self._block = block
        first = block * self.block
        ahead = self._sequence[first : first + 2 * self.block]
        names = [self.names[n] for n in ahead]
        self.cache.release_all_but({*names, self.names[number]})
        self.cache.prefetch([n for n in names if n != self.names[number]])
        return {number, *ahead}


class FollowsWindow:
    """`shuffled` and `set_epoch` of a reader whose cache follows a `CacheWindow` (its
    `_window`; None where the data is read in place)."""

    _window: CacheWindow | None

    @property
    def shuffled(self) -> bool:
        """Whether the cache fetches ahead in the training order (else in stored order)."""
        return self._window is not None and self._window.shuffled

    @shuffled.setter
    def shuffled(self, value: bool) -> None:
        if self._window is not None:
            self._window.shuffled = value

    def set_epoch(self, epoch: int) -> None:
        """The order of `epoch`'s files, which the cache fetches ahead in."""
        if self._window is not None:
            self._window.set_epoch(epoch)
