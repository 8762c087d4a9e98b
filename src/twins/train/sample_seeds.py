"""Augmentation draws that belong to the image: each sample seeded from (seed, epoch, index).

A data loader's random streams advance with every image it augments, in the loader's own
process or in each worker, so the draws for the n-th batch of an epoch depend on every batch
before it. A run resumed within an epoch skips those batches and would draw differently.
Seeding Python's `random`, NumPy and torch (CPU) afresh for each sample, from the run's seed,
the epoch and the sample's index, makes an image's crop, flip, RandAugment and erasing the same
whichever batches came before it, with any number of loader workers. The caller's random
states are left as they were (where they are a loader's, in its workers or while it fetches
in this process, they are just seeded).

The epoch reaches loader workers with the data set itself, so the training loader must start
its workers anew each epoch (as `twins.data.build_loader` does for training).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from twins.data.loader import loader_owns_random_states
from twins.seeds import derive_seed, seed_cpu_streams, seeded


class SampleSeededDataset(Dataset):
    """`dataset`, each item fetched under random states seeded from (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):  # a packed data set fetches ahead in its order
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed = derive_seed(self.seed, self.epoch, index)
        if loader_owns_random_states():
            # The loader's states serve its samples only, each seeded afresh: none to put back
            # (saving and restoring NumPy's state costs 20 times its seeding).
            seed_cpu_streams(seed)
            return self.dataset[index]
        with seeded(seed):
            return self.dataset[index]

    def check_health(self) -> None:
        """The wrapped data set's check that not most files are broken, where it has one."""
        check = getattr(self.dataset, "check_health", None)
        if check is not None:
            check()
