"""Data mode: throughput of the training loader (decode, the seed's train transform with
RandAugment and random erasing, collate) on a folder of images, ours against timm's loader
(`timm.data.create_loader` on its `ImageDataset`) running the same transform. Each round starts the loader afresh (training workers are not
persistent) and times the batches after the first one of each worker, so worker start-up is left
out and the steady rate is measured."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from timm.data import ImageDataset, create_loader

from twins.benchmark.timing import Timing
from twins.config import TrainConfig
from twins.data import SafeImageFolder, build_loader, build_train_transform
from twins.errors import TwinsError


def image_root(path: str | Path) -> Path:
    """The class-folder root: `path/train` when there is one (the seed's layout), else `path`."""
    root = Path(path).expanduser()
    if (root / "train").is_dir():
        root = root / "train"
    if not root.is_dir():
        raise TwinsError(
            f"data {path} is not a folder: give a folder of class folders of images",
            argument="data",
        )
    return root


def build_loaders(
    root: Path, image_size: int, batch_size: int, workers: int, compare_timm: bool
) -> dict[str, Iterable]:
    config = dataclasses.replace(
        TrainConfig(), image_size=image_size, batch_size=batch_size, num_parallel_workers=workers
    )
    try:
        dataset = SafeImageFolder(root, transform=build_train_transform(config))
    except FileNotFoundError as error:
        raise TwinsError(f"{error}: data needs class folders of images", argument="data") from error
    loaders: dict[str, Iterable] = {"ours": build_loader(dataset, config, train=True)}
    needed = max(1, loaders["ours"].num_workers) + 1  # untimed ones and one timed
    if len(loaders["ours"]) < needed:
        raise TwinsError(
            f"{root} holds {len(dataset)} images, under {needed} batches of {batch_size}: "
            "add images or lower batch_size",
            argument="batch_size",
        )
    if compare_timm:
        reference = create_loader(
            ImageDataset(str(root)),
            input_size=(3, image_size, image_size),
            batch_size=batch_size,
            is_training=True,
            use_prefetcher=False,
            num_workers=loaders["ours"].num_workers,
            persistent_workers=False,
            device=torch.device("cpu"),
        )
        # The same transform object as ours (timm's create_transform with the recipe's
        # arguments, plus the zero-bit posterize recent Pillow needs): the two loaders then
        # differ in their data set and loader machinery only.
        reference.dataset.transform = dataset.transform
        loaders["timm"] = reference
    return loaders


def time_loaders(loaders: dict[str, Iterable], iters: int, rounds: int) -> dict[str, Timing]:
    """Seconds per batch over `iters` batches (fewer if the folder is short), alternated."""
    timings = {name: Timing() for name in loaders}
    names = list(loaders)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            batches = iter(loaders[name])
            # Untimed: worker start-up and the batches the workers made meanwhile, one each.
            for _ in range(max(1, getattr(loaders[name], "num_workers", 0))):
                next(batches)
            timed = 0
            start = time.perf_counter()
            for _ in range(iters):
                if next(batches, None) is None:
                    break
                timed += 1
            elapsed = time.perf_counter() - start
            timings[name].seconds_per_step.append(elapsed / max(timed, 1))
            del batches  # stops the workers before the other loader runs
    return timings
