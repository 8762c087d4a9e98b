"""Data mode: images per CPU-second of the training loader on a folder of images, ours against
reference loaders running the same recipe (random resized crop bicubic, flip, RandAugment
`rand-m9-mstd0.5-inc1`, random erasing 0.25 "pixel") with the same output contract (uint8
batches from the workers; normalisation and erasing on the device, here the CPU). Ours is the
loader `twins train` builds: each sample seeded from (seed, epoch, index)
(`twins.train.sample_seeds`).

How it is measured: each round runs every loader for one pass of `batches` full batches (the
folder read over and over in a shuffled order, so that a small folder still makes a pass long
enough to hide the start of its fresh workers, as an ImageNet epoch does), alternated, in
reversed order every other round. A loader's CPU time is that of
all its processes: the main process's `time.process_time` over the loop (all its threads: the
batches' hand-over, and the device's share, normalisation and erasing, for both loaders) plus
the CPU time of the worker processes, which the kernel adds to this process's
`RUSAGE_CHILDREN` when they end (at the end of each pass: training workers do not persist).
Images per CPU-second = images handed out / that CPU time; wall-clock images/s is given too,
but on a shared machine the CPU time is the steadier figure. The ratio is the median of the
rounds' ratios.

`--data` may also be a packed data set (`twins pack`): a local folder or a URL (s3://...). Ours
then reads `ShardDataset` (through the node's shard cache for a URL) with the same transform. The
first, unmeasured pass is reported too (`first_pass_images_per_cpu_s`): with a fresh cache
(TWINS_CACHE_DIR) it is the pass that downloads the shards, the later ones read them locally.

References, by name (`REFERENCE_LOADERS`): "timm" is `timm.data.create_loader` on timm's
`ImageDataset` of the same folder, with `use_prefetcher=True` (its `PrefetchLoader` on the CPU);
for a local packed folder it is the same loader on timm's `wds/` reader of the shards
(`create_dataset("wds/...")`, streaming them; `repeats` makes the pass as long).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from timm.data import ImageDataset, create_dataset, create_loader
from torch.utils.data import Dataset

from twins import storage
from twins.config import TrainConfig
from twins.data import SafeImageFolder, build_loader
from twins.data.images import decoder_for
from twins.data.packed import format as packed
from twins.errors import TwinsError
from twins.tasks.classify.device_batch import build_device_batch
from twins.tasks.classify.task import ClassifyTask
from twins.tasks.classify.train_transform import build_train_transform
from twins.tasks.classify.transforms import allow_zero_bit_posterize
from twins.train.sample_seeds import SampleSeededDataset

CPU = torch.device("cpu")


@dataclasses.dataclass
class LoaderUnderTest:
    """Batches of a loader, and what turns one batch's inputs into the model's (on the CPU)."""

    batches: Iterable
    finish: Callable[[Any], torch.Tensor]


def is_packed_source(data: str) -> bool:
    """Whether `--data` names a packed data set (a URL is read only as one)."""
    return storage.is_remote(data) or packed.is_packed(data)


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


def recipe(image_size: int, batch_size: int, workers: int) -> TrainConfig:
    """The training config whose data keys the benchmark runs (the seed's augmentation)."""
    return dataclasses.replace(
        TrainConfig(),
        image_size=image_size,
        batch_size=batch_size,
        num_parallel_workers=workers,
        interpolation="bicubic",
        hflip=0.5,
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
    )


class Repeated(Dataset):
    """`dataset` read over and over: item i is item i mod len(dataset), `length` items."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


class RepeatedImageDataset(ImageDataset):
    """timm's `ImageDataset` read over and over (its loader factory sets its transform)."""

    def __init__(self, root: Path, length: int) -> None:
        super().__init__(str(root))
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return super().__getitem__(index % len(self.reader))


def our_loader(root: Path, config: TrainConfig, images: int) -> LoaderUnderTest:
    try:
        dataset = SafeImageFolder(root, build_train_transform(config), decode=decoder_for("train"))
    except FileNotFoundError as error:
        raise TwinsError(f"{error}: data needs class folders of images", argument="data") from error
    if len(dataset) < config.batch_size:
        raise TwinsError(
            f"{root} holds {len(dataset)} images, not one full batch of {config.batch_size}: "
            "add images or lower batch_size",
            argument="batch_size",
        )
    return _our_training_loader(dataset, config, images)


def _our_training_loader(dataset: Dataset, config: TrainConfig, images: int) -> LoaderUnderTest:
    # As `twins train` reads it: each sample seeded from (seed, epoch, index).
    samples = SampleSeededDataset(Repeated(dataset, images), config.seed)
    loader = build_loader(samples, config, train=True, stack=ClassifyTask().collate(train=True))
    device_batch = build_device_batch(config)
    return LoaderUnderTest(loader, lambda inputs: device_batch(inputs, CPU))


def our_packed_loader(url: str, config: TrainConfig, images: int) -> LoaderUnderTest:
    from twins.data.packed.reader import open_packed

    if not packed.is_packed(url):
        raise TwinsError(f"{storage.display(url)} holds no packed data set", argument="data")
    shards = packed.read_manifest(url)["splits"]["train"]["shards"]
    largest = max(s["bytes"] for s in shards)
    # Every shard may be read at any time (the pass is a shuffle of the whole set): one block of
    # all shards, held together, rather than a new block fetched at nearly every sample.
    dataset = open_packed(
        url,
        {"train": build_train_transform(config)},
        shuffle_block=len(shards),
        cache_dir=config.cache_dir or None,
        cache_size=2 * len(shards) * largest,
    )["train"]
    dataset.set_epoch(0)
    return _our_training_loader(dataset, config, images)


def timm_loader(root: Path, config: TrainConfig, workers: int, images: int) -> LoaderUnderTest:
    return _timm_create_loader(RepeatedImageDataset(root, images), config, workers)


def timm_wds_loader(url: str, config: TrainConfig, workers: int, images: int) -> LoaderUnderTest:
    if storage.is_remote(url):
        raise TwinsError(
            "--compare timm on packed data reads a local packed folder (timm's wds/ reader)",
            argument="compare",
        )
    samples = packed.read_manifest(url)["splits"]["train"]["samples"]
    dataset = create_dataset(
        "wds/twins",
        root=str(url),
        split="train",
        is_training=True,
        batch_size=config.batch_size,
        repeats=max(1, -(-images // samples)),
        num_samples=images,
    )
    return _timm_create_loader(dataset, config, workers)


def _timm_create_loader(dataset: Any, config: TrainConfig, workers: int) -> LoaderUnderTest:
    loader = create_loader(
        dataset,
        input_size=(3, config.image_size, config.image_size),
        batch_size=config.batch_size,
        is_training=True,
        use_prefetcher=True,
        scale=tuple(config.crop_scale),
        hflip=config.hflip,
        color_jitter=None,
        auto_augment=config.auto_augment,
        interpolation=config.interpolation,
        re_prob=config.re_prob,
        re_mode=config.re_mode,
        re_count=config.re_count,
        num_workers=workers,
        persistent_workers=False,
        device=CPU,
    )
    # Recent Pillow refuses timm's 0-bit posterize (RandAugment at magnitude 10).
    allow_zero_bit_posterize(loader.dataset.transform)
    return LoaderUnderTest(loader, lambda inputs: inputs)  # the prefetcher finished them


# Reference loaders by the name `--compare` gives: (folder, config, workers, images per pass).
REFERENCE_LOADERS: dict[str, Callable[[Path, TrainConfig, int, int], LoaderUnderTest]] = {
    "timm": timm_loader,
}
# The same names on packed data: (packed folder, config, workers, images per pass).
PACKED_REFERENCE_LOADERS: dict[str, Callable[[str, TrainConfig, int, int], LoaderUnderTest]] = {
    "timm": timm_wds_loader,
}


def build_loaders(
    data: str | Path,
    image_size: int,
    batch_size: int,
    workers: int,
    batches: int,
    compare: str | None,
) -> tuple[dict[str, LoaderUnderTest], int]:
    """{name: loader} (ours first, then the reference asked for), each pass `batches` batches,
    and the workers each uses. `data` is a folder of images or a packed data set."""
    config = recipe(image_size, batch_size, workers)
    is_packed = is_packed_source(str(data))
    source = str(data) if is_packed else image_root(data)
    images = batches * batch_size
    ours = (our_packed_loader if is_packed else our_loader)(source, config, images)
    loaders = {"ours": ours}
    workers = ours.batches.num_workers  # capped to the CPUs available
    if compare is not None:
        reference = (PACKED_REFERENCE_LOADERS if is_packed else REFERENCE_LOADERS)[compare]
        loaders[compare] = reference(source, config, workers, images)
    return loaders, workers


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_pass(loader: LoaderUnderTest) -> dict[str, float]:
    """One pass over the loader: images, CPU seconds of all its processes, wall seconds."""
    children, own, wall = _children_cpu_s(), time.process_time(), time.perf_counter()
    images = 0
    for inputs, targets in loader.batches:
        loader.finish(inputs)
        images += len(targets)
    own, wall = time.process_time() - own, time.perf_counter() - wall
    workers = _children_cpu_s() - children  # the pass's workers have ended: counted
    return {"images": images, "cpu_s": own + workers, "worker_cpu_s": workers, "wall_s": wall}


def measure_loaders(loaders: dict[str, LoaderUnderTest], rounds: int) -> dict[str, list[dict]]:
    """Per loader, one measured pass per round, after a first pass each (file and shard
    caches), kept apart under "first"."""
    firsts = {name: measure_pass(loader) for name, loader in loaders.items()}
    passes: dict[str, list[dict]] = {name: [] for name in loaders}
    names = list(loaders)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            passes[name].append(measure_pass(loaders[name]))
    return {name: [firsts[name], *runs] for name, runs in passes.items()}


def summarise(passes: dict[str, list[dict]]) -> dict[str, Any]:
    """Per-loader rates (medians over the rounds) and the ratio of ours to the reference."""
    results = {}
    rates = {}
    for name, (first, *runs) in passes.items():
        rates[name] = [run["images"] / max(run["cpu_s"], 1e-9) for run in runs]
        results[name] = {
            "first_pass_images_per_cpu_s": first["images"] / max(first["cpu_s"], 1e-9),
            "first_pass_images_per_s": first["images"] / first["wall_s"],
            "images_per_cpu_s": statistics.median(rates[name]),
            "images_per_s": statistics.median(run["images"] / run["wall_s"] for run in runs),
            "cpu_s_per_pass": statistics.median(run["cpu_s"] for run in runs),
            "worker_cpu_s_per_pass": statistics.median(run["worker_cpu_s"] for run in runs),
            "images_per_pass": first["images"],
            "images_per_cpu_s_per_round": rates[name],
        }
    summary: dict[str, Any] = {"results": results}
    summary["images_per_cpu_s"] = results["ours"]["images_per_cpu_s"]
    reference = next((name for name in passes if name != "ours"), None)
    summary["reference"] = reference
    if reference is None:
        return {**summary, "ratio": None, "ratios": None}
    ratios = [a / b for a, b in zip(rates["ours"], rates[reference], strict=True)]
    summary[f"{reference}_images_per_cpu_s"] = results[reference]["images_per_cpu_s"]
    return {**summary, "ratio": statistics.median(ratios), "ratios": ratios}
