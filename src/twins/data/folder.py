"""Class folders read with torchvision's ImageFolder: `root/<class>/<image>`, class indices
following the sorted folder names. Images are the files with an extension of
`twins.data.images.IMAGE_EXTENSIONS` (GIFs too, as `predict` reads them); the other files found
(notes, .DS_Store, ...) are listed in `dataset.left_out`.

Broken files do not stop a run: `SafeImageFolder` converts every decodable image to RGB
(`twins.data.images.to_rgb`) and returns `None` for a file it cannot decode. The loader's collate
(`twins.data.loader.collate_batch`) then refills a training batch with other samples of the same
batch (so batch size stays fixed) and shortens an evaluation batch (so no image is counted twice).
The counts of what was read, the broken-file list and the health check are those of every image
data set (`twins.data.counted`).

Folder links inside a class folder are not followed (torchvision follows them): each leads out
of the class folder, relabelling images (`train/cat/up -> ..` makes every image a cat, again and
again), or back to a folder read anyway, repeating them. A warning names each one. A class
folder that is itself a link is read wherever it leads.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb, is_image_file
from twins.data.split import relative_keys

logger = logging.getLogger(__name__)


class SafeImageFolder(CountedReads, ImageFolder):
    """ImageFolder that converts every image to RGB and skips (returns None for) broken files.

    `decode` turns a file's bytes into (RGB image, mode it was stored in): `decode_rgb` (PIL
    images, the default) or `decode_rgb_tensor` (uint8 tensors, what the training transform
    takes); `twins.data.images.decoder_for` chooses by split."""

    def __init__(
        self,
        root: str | Path,
        transform: Any = None,
        decode: Callable[[bytes], tuple[Any, str]] = decode_rgb,
    ) -> None:
        self.left_out: list[str] = []  # files found that are not images, each once
        super().__init__(str(root), transform=transform, is_valid_file=is_image_file)
        self.decode = decode
        self.init_counts(len(self.samples))

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
        return self.read_sample(index, target, lambda: self.decode(read_regular_file(path)))

    def file_name(self, index: int) -> str:
        return self.samples[index][0]

    def sample_keys(self) -> list[str]:
        """Each image's path relative to the folder (`cat/0001.jpg`): the same wherever the
        folder is mounted (`twins.data.split`)."""
        return relative_keys([path for path, _ in self.samples], self.root)


def read_regular_file(path: str) -> bytes:
    """The bytes of the regular file at `path`; OSError for anything else (a FIFO, a folder)."""
    # Not blocking on open, and only a regular file read: a FIFO named like an image would
    # stop the loader for ever; this way it is an unreadable file, skipped and counted.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return file.read()


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


def describe_left_out(datasets: list[Any], root: str | Path, shown: int = 2) -> str:
    """ "N files not images left out (e.g. train/cat/notes.txt)" for the files of `datasets`
    that are not images (paths relative to `root`); "" when there are none."""
    paths = [
        os.path.relpath(path, root) for data in datasets for path in getattr(data, "left_out", ())
    ]
    if not paths:
        return ""
    count = f"{len(paths)} files not images" if len(paths) > 1 else "1 file not an image"
    return f"{count} left out (e.g. {', '.join(paths[:shown])})"
