"""The epoch order of a Parquet set: blocks of files, windows of row groups within each block,
a pure function of (seed, epoch, sizes, block, window)."""

from __future__ import annotations

import pytest

from twins.data.order import shard_sequence, window_order

# 5 files of uneven row groups: 37 rows.
GROUPS = [[4, 4, 2], [4, 4], [3], [4, 4, 4], [4]]


@pytest.mark.parametrize("block,window", [(1, 1), (2, 8), (3, 5), (5, 100)])
def test_every_row_once_block_after_block_of_files(block, window):
    order = window_order(GROUPS, seed=7, epoch=3, block=block, window=window)
    assert sorted(order) == list(range(37))
    starts = [0]
    for sizes in GROUPS:
        starts.append(starts[-1] + sum(sizes))
    files = shard_sequence(len(GROUPS), 7, 3)
    first = files[:block]
    rows = {row for f in first for row in range(starts[f], starts[f + 1])}
    assert set(order[: len(rows)]) == rows  # the first block's files come first
    assert window_order(GROUPS, 7, 3, block, window) == order  # a pure function
    assert window_order(GROUPS, 7, 4, block, window) != order


def test_a_window_of_one_row_reads_row_groups_one_at_a_time():
    order = window_order(GROUPS, seed=0, epoch=0, block=2, window=1)
    groups: list[set[int]] = []
    start = 0
    for sizes in GROUPS:
        for size in sizes:
            groups.append(set(range(start, start + size)))
            start += size
    place = 0
    while place < len(order):
        group = next(g for g in groups if order[place] in g)
        assert set(order[place : place + len(group)]) == group
        place += len(group)
