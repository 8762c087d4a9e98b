"""How many compute threads a training process runs: the config's `threads`, else the cores
this process may use, shared with the other processes of its machine, less its data workers.

On a small machine torch's default (every core) makes the compute threads and the loader's
workers wait on each other: `twins train` of the segmentation demo ran at 6 images/s with it on
2 shared cores against 48 with 1 compute thread beside 1 worker, and the thread count changes
the numbers a run computes, so it is part of the recipe, written into config.yaml.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from twins.data.loader import available_cpus


def compute_threads(config: Any) -> int:
    """`config.threads`, or the cores left to this process (its share of the machine's, under
    torchrun) after its data workers, at least one."""
    if config.threads:
        return int(config.threads)
    return max(1, available_cpus() - int(config.num_parallel_workers))


@contextlib.contextmanager
def threads_set(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` while the block runs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def describe_threads(count: int, config: Any) -> str:
    """The `device:` line's account of the threads: "1 compute thread beside 1 data worker"."""
    workers = int(config.num_parallel_workers)
    how = "threads" if config.threads else "threads: the cores left after the data workers"
    thread_word = "thread" if count == 1 else "threads"
    worker_word = "worker" if workers == 1 else "workers"
    return f"{count} compute {thread_word} beside {workers} data {worker_word} ({how})"
