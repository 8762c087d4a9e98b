"""Data mode: throughput of the training loader (decode, the seed's train transform with
RandAugment and random erasing, collate) on a folder of images, ours against timm's loader with
the same augmentation. Each round starts the loader afresh (training workers are not
persistent) and times the batches after the first, so worker start-up is left out."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageDataset, create_loader

from twins.benchmark.timing import Timing
from twins.data import SafeImageFolder, build_loader, build_train_transform
from twins.errors import TwinsError
from twins.train.config import TrainConfig


def image_root(path: str | Path) -> Path:
    """The class-folder root: `path/train` when there is one (the seed's layout), else `path`."""
    root = Path(path).expanduser()
    if (root / "train").is_dir():
        root = root / "train"
    if not root.is_dir():
        raise TwinsError(f"--data {path} is not a folder: give a folder of class folders of images")
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
        raise TwinsError(f"{error}: --data needs class folders of images") from None
    loaders: dict[str, Iterable] = {"ours": build_loader(dataset, config, train=True)}
    if len(loaders["ours"]) < 2:
        raise TwinsError(
            f"{root} holds {len(dataset)} images, under 2 batches of {batch_size}: "
            "add images or lower --batch-size"
        )
    if compare_timm:
        loaders["timm"] = create_loader(
            ImageDataset(str(root)),
            input_size=(3, image_size, image_size),
            batch_size=batch_size,
            is_training=True,
            use_prefetcher=False,
            scale=(0.08, 1.0),
            hflip=config.hflip,
            color_jitter=None,
            auto_augment=config.auto_augment,
            interpolation=config.interpolation,
            mean=IMAGENET_DEFAULT_MEAN,
            std=IMAGENET_DEFAULT_STD,
            re_prob=config.re_prob,
            re_mode=config.re_mode,
            re_count=config.re_count,
            num_workers=loaders["ours"].num_workers,
            persistent_workers=False,
            device=torch.device("cpu"),
        )
    return loaders


def time_loaders(loaders: dict[str, Iterable], iters: int, rounds: int) -> dict[str, Timing]:
    """Seconds per batch over `iters` batches (fewer if the folder is short), alternated."""
    timings = {name: Timing() for name in loaders}
    names = list(loaders)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            batches = iter(loaders[name])
            next(batches)  # worker start-up and the first batch: not timed
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
