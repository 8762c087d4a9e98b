"""Seeds: the one way every random stream of the toolkit is seeded.

Every stream (the epoch's order, each image's augmentation, each batch's drop path and Mixup,
the loader's workers) is seeded from a tuple of integers such as (seed, epoch, index), mixed by
`derive_seed`, so a draw depends on where it belongs, not on the draws before it: a run resumed
anywhere draws what the unbroken run drew.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (seed, epoch, rank, ...)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Python's `random`, NumPy and torch (every device) from `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_cpu_streams(seed: int) -> None:
    """Python's `random`, NumPy and torch's CPU generator from `seed` (what `seeded` seeds)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block under `random`, NumPy and torch CPU states seeded from `seed`, then put the
    previous states back (CUDA's are not touched: transforms run on the CPU)."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_cpu_streams(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
