"""Train and validation data sets: class folders read with torchvision's ImageFolder.

Layout (the seed's, and ImageNet's): `data_url/train/<class>/<image>` and
`data_url/val/<class>/<image>`; class indices follow the sorted folder names. Images are the
files with an extension of `twins.data.images.IMAGE_EXTENSIONS` (GIFs too, as `predict` reads
them); the other files found (notes, .DS_Store, ...) are listed in `dataset.left_out`.

Broken files do not stop a run: `SafeImageFolder` converts every decodable image to RGB
(`twins.data.images.to_rgb`) and returns `None` for a file it cannot decode. The loader's collate
(`twins.data.loader.collate_batch`) then refills a training batch with other samples of the same
batch (so batch size stays fixed) and shortens an evaluation batch (so no image is counted twice).
Counts of images tried, converted and skipped (every read counts, each epoch again) are kept in
shared memory, so they include the loader's worker processes: read `dataset.tried`,
`dataset.converted`, `dataset.skipped`; `dataset.broken_files` lists the unreadable files found
so far, each once (a warning names each the first time).
`check_health()` stops the run when most files read so far were broken; `judge_health` is that
judgement on given counts, for counts summed over several processes.

Folder links inside a class folder are not followed (torchvision follows them): each leads out
of the class folder, relabelling images (`train/cat/up -> ..` makes every image a cat, again and
again), or back to a folder read anyway, repeating them. A warning names each one. A class
folder that is itself a link is read wherever it leads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torchvision.datasets import ImageFolder

from twins.data.images import is_image_file, open_rgb
from twins.data.transforms import build_eval_transform, build_train_transform
from twins.errors import TwinsError

logger = logging.getLogger(__name__)

# One counter column per process: column 0 is the main process, column 1 + i is loader worker i.
# One writer per column, so no lock is needed; workers beyond the last column share it.
_COUNTER_COLUMNS = 65
_TRIED, _CONVERTED, _SKIPPED = range(3)

# `check_health` judges only after this many reads (or the whole set, when smaller).
MIN_READS_BEFORE_JUDGING = 256


class ImageSample(tuple):
    """(image, target), which also says whether the file was stored in another mode than RGB:
    the loader counts the conversions of the batches it hands out, not of those its workers
    read ahead, so the counts a checkpoint keeps are exact."""

    def __new__(cls, image: Any, target: int, converted: bool) -> ImageSample:
        sample = super().__new__(cls, (image, target))
        sample.converted = converted
        return sample

    def __reduce__(self) -> tuple:
        return ImageSample, (self[0], self[1], self.converted)


class SafeImageFolder(ImageFolder):
    """ImageFolder that converts every image to RGB and skips (returns None for) broken files."""

    def __init__(self, root: str | Path, transform: Any = None) -> None:
        self.left_out: list[str] = []  # files found that are not images, each once
        super().__init__(str(root), transform=transform, is_valid_file=is_image_file)
        self._counts = torch.zeros(3, _COUNTER_COLUMNS, dtype=torch.int64).share_memory_()
        # One flag per file, shared too: each broken file is named once per run, not per epoch.
        self._broken = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        # Hidden folders (.ipynb_checkpoints, .DS_Store dirs, ...) are not classes.
        with os.scandir(directory) as scan:
            entries = list(scan)
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        self.left_out += sorted(e.path for e in entries if e.is_file())
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {name: index for index, name in enumerate(classes)}

    def make_dataset(
        self,
        directory: str | Path,
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        """torchvision's (path, class index) list of the image files, in its order, without
        following folder links inside class folders; the other files go to `left_out`."""
        samples: list[tuple[str, int]] = []
        empty = []
        for name in sorted(class_to_idx):
            folder = os.path.join(os.path.expanduser(directory), name)
            found = []
            for root, files in sorted(_class_folder_files(folder)):
                for file in sorted(files):
                    path = os.path.join(root, file)
                    if is_image_file(path):
                        found.append((path, class_to_idx[name]))
                    else:
                        self.left_out.append(path)
            if not found:
                empty.append(name)
            samples += found
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
        return samples

    def __getitem__(self, index: int) -> ImageSample | None:
        path, target = self.samples[index]
        column = _counter_column()
        self._counts[_TRIED, column] += 1
        try:
            image, stored_mode = open_rgb(path)
        except Exception as error:  # any decoder failure: corrupt, truncated, empty, not an image
            self._counts[_SKIPPED, column] += 1
            if not self._broken[index]:
                self._broken[index] = True
                logger.warning("skipping unreadable image %s (%s)", path, error)
            return None
        converted = stored_mode != "RGB"
        if converted:
            self._counts[_CONVERTED, column] += 1
        if self.transform is not None:
            image = self.transform(image)
        return ImageSample(image, target, converted)

    @property
    def tried(self) -> int:
        """Images read so far (every epoch counts again), in all processes."""
        return int(self._counts[_TRIED].sum())

    @property
    def converted(self) -> int:
        """Images read so far that were stored in another mode than RGB and converted."""
        return int(self._counts[_CONVERTED].sum())

    @property
    def skipped(self) -> int:
        """Images read so far that could not be decoded and were left out."""
        return int(self._counts[_SKIPPED].sum())

    @property
    def broken_files(self) -> list[str]:
        """Files found unreadable so far, each once."""
        return [self.samples[i][0] for i in self._broken.nonzero().flatten().tolist()]

    def check_health(self) -> None:
        """Raise TwinsError when most of the images read so far were unreadable."""
        judge_health(self.tried, self.skipped, len(self), self.root)


def judge_health(tried: int, skipped: int, size: int, root: str | Path) -> None:
    """Raise TwinsError when more than half of `tried` reads of the data set at `root` (`size`
    files) were unreadable, once `tried` reaches MIN_READS_BEFORE_JUDGING (or `size`, if fewer)."""
    if tried >= min(size, MIN_READS_BEFORE_JUDGING) and 2 * skipped > tried:
        raise TwinsError(
            f"{skipped} of {tried} images read from {root} could not be decoded; "
            "repair or remove the broken files (the warnings above name them)"
        )


def _class_folder_files(folder: str) -> list[tuple[str, list[str]]]:
    """(folder, file names) of `folder` and the real folders below it. A folder link inside a
    class folder leads out of it or back to a folder read anyway, so none is followed; a
    warning names each."""
    found: list[tuple[str, list[str]]] = []
    for root, folders, files in os.walk(folder):  # followlinks=False: links are listed, not entered
        found.append((root, files))
        for name in folders:
            path = os.path.join(root, name)
            if os.path.islink(path):
                logger.warning(
                    "not following folder link %s -> %s: a link inside class folder %s would "
                    "relabel or repeat images; link whole class folders instead",
                    path,
                    os.path.realpath(path),
                    folder,
                )
    return found


def _counter_column() -> int:
    worker = get_worker_info()
    return 0 if worker is None else 1 + worker.id % (_COUNTER_COLUMNS - 1)


def build_datasets(cfg: Any) -> tuple[SafeImageFolder, SafeImageFolder, list[str]]:
    """Return (train set, validation set, class names) from `cfg.data_url`.

    Reads `data_url` and `num_classes` and, through the transforms, `image_size`, `crop_pct`,
    `interpolation`, `auto_augment`, `hflip`, `re_prob`, `re_mode`, `re_count`.
    """
    root = Path(cfg.data_url).expanduser()
    train = _open_split(root, "train", build_train_transform(cfg))
    val = _open_split(root, "val", build_eval_transform(cfg))
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise TwinsError(
            f"class folders of {root / 'train'} and {root / 'val'} differ "
            f"(only in train: {_names(only_train)}; only in val: {_names(only_val)}); "
            "give both splits the same class folders"
        )
    if len(train.classes) != cfg.num_classes:
        raise TwinsError(
            f"{root / 'train'} has {len(train.classes)} class folders but num_classes is "
            f"{cfg.num_classes}; set num_classes={len(train.classes)} or fix the folders"
        )
    return train, val, list(train.classes)


def _open_split(root: Path, split: str, transform: Any) -> SafeImageFolder:
    folder = root / split
    layout = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image>"
    if not folder.is_dir():
        raise TwinsError(
            f"data folder {folder} not found: {layout}; set data_url", argument="data_url"
        )
    try:
        return SafeImageFolder(folder, transform=transform)
    except FileNotFoundError as error:  # no class folders, or a class folder without images
        message = str(error).splitlines()[0]
        raise TwinsError(f"{message} ({layout}); add images or remove empty folders") from error


def describe_left_out(datasets: list[SafeImageFolder], root: str | Path, shown: int = 2) -> str:
    """ "N files not images left out (e.g. train/cat/notes.txt)" for the files of `datasets`
    that are not images (paths relative to `root`); "" when there are none."""
    paths = [os.path.relpath(path, root) for data in datasets for path in data.left_out]
    if not paths:
        return ""
    count = f"{len(paths)} files not images" if len(paths) > 1 else "1 file not an image"
    return f"{count} left out (e.g. {', '.join(paths[:shown])})"


def _names(names: list[str], shown: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
