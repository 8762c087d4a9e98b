"""Semantic segmentation data sets: images paired with label PNGs, in the ADE20K release layout.

Layout (ADEChallengeData2016's, which mmsegmentation reads)::

    root/images/training/<name>.jpg        root/annotations/training/<name>.png
    root/images/validation/<name>.jpg      root/annotations/validation/<name>.png
    root/classes.json                      (optional: the class list of any other data set)

An image is paired with the annotation of the same stem; an image of any extension of
`twins.data.images.IMAGE_EXTENSIONS` is read. A label PNG holds one 8-bit class value per pixel
(grayscale or palette PNG: the palette indices are the values), read unchanged.

Without `classes.json` the folder is ADE20K: its 150 classes (`twins.tasks.segment.ade20k`) and
`reduce_zero_label` (value 0 is "unlabelled" and becomes the ignore index 255, value i becomes
class i - 1, as mmsegmentation's `LoadAnnotations(reduce_zero_label=True)`). A folder of one's
own data says its classes in `classes.json`::

    {"classes": ["background", "cat", "dog"],          # class i has label value i
     "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],  # optional: one RGB colour per class
     "reduce_zero_label": false}                        # optional: true for ADE20K-style values

Pixels of value 255 (after reduction) are ignored by the loss and the metrics.

Broken files do not stop a run, as for classification (`twins.data.counted`): an image that
cannot be decoded, or a label PNG that cannot be decoded, is not one channel or differs in size
from its image, makes the sample None; it is counted in `dataset.skipped`, named once in a
warning and in `dataset.broken_files`, and the loader's collate leaves it out. Files that are not
images are listed in `dataset.left_out`; images without an annotation in `dataset.unlabelled`
(both named once in a warning when the data set is opened).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_png

from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb_tensor, is_image_file
from twins.errors import TwinsError
from twins.tasks.segment.ade20k import ADE20K_CLASSES, ADE20K_PALETTE

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
CLASSES_FILE = "classes.json"
# The folder names of the ADE20K release; the toolkit's own split names are accepted too.
SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
}


@dataclass(frozen=True)
class ClassList:
    """The classes of a segmentation data set: names (class i is index i of the model's
    output), a colour per class, and whether label values are stored ADE20K-style (i + 1)."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    reduce_zero_label: bool


ADE20K = ClassList(ADE20K_CLASSES, ADE20K_PALETTE, reduce_zero_label=True)


def reduce_zero_label(label: torch.Tensor) -> torch.Tensor:
    """mmsegmentation's `reduce_zero_label` on a uint8 label map: 0 -> 255 (ignored), i -> i - 1,
    and 255 stays 255."""
    reduced = label.to(torch.int16) - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced.to(torch.uint8)


def decode_label(data: bytes) -> torch.Tensor:
    """A label PNG's bytes as an H x W uint8 tensor of its stored values (palette indices for a
    palette PNG); ValueError for a PNG that is not one 8-bit channel."""
    label = decode_png(
        torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED
    )
    if label.shape[0] != 1 or label.dtype != torch.uint8:
        raise ValueError(
            f"label PNG has {label.shape[0]} channels of {label.dtype}; "
            "expected one 8-bit channel of class values"
        )
    return label[0]


def read_class_list(root: str | Path) -> ClassList:
    """The classes of the data set at `root`: its `classes.json`, or ADE20K's without one."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return ADE20K
    try:
        spec = json.loads(path.read_text())
        names = tuple(spec["classes"])
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError("`classes` must be a non-empty list of names")
        palette = spec.get("palette") or [ADE20K_PALETTE[i % 150] for i in range(len(names))]
        palette = tuple(tuple(int(v) for v in colour) for colour in palette)
        if len(palette) != len(names) or any(
            len(c) != 3 or min(c) < 0 or max(c) > 255 for c in palette
        ):
            raise ValueError("`palette` must hold one [R, G, B] (0-255) per class")
        reduce = spec.get("reduce_zero_label", False)
        if not isinstance(reduce, bool):
            raise ValueError("`reduce_zero_label` must be true or false")
    except (ValueError, KeyError, TypeError) as error:
        raise TwinsError(
            f"{path} is not a class list ({error}); write "
            '{"classes": [names...], "palette": [[r, g, b]...], "reduce_zero_label": false}',
            argument="data_url",
        ) from error
    return ClassList(names, palette, reduce)


class SegmentationFolder(CountedReads, Dataset):
    """Image + label PNG pairs of one split of a folder in the ADE20K layout.

    Item i is an `ImageSample` (image, label): without a transform the image is a
    `tv_tensors.Image` (3 x H x W uint8 RGB) and the label a `tv_tensors.Mask` (H x W uint8, after
    `reduce_zero_label` where the class list says so); with one, what
    `transform(image, label)` returns. None for a broken pair (see the module's docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        classes: ClassList,
        transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = list(classes.names)
        self.class_list = classes
        self.pair_transform = transform
        self.transform = None  # CountedReads' per-image transform: the pair is transformed here
        self.images, self.labels, self.left_out, self.unlabelled = _pair_files(self.root, split)
        self.init_counts(len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    def file_name(self, index: int) -> str:
        return self.images[index]

    def __getitem__(self, index: int) -> ImageSample | None:
        sample = self.read_sample(index, 0, lambda: self._decode_pair(index))
        if sample is None:
            return None
        image, label = sample[0]
        if self.pair_transform is not None:
            image, label = self.pair_transform(image, label)
        return ImageSample(image, label, sample.converted)

    def _decode_pair(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
        image, mode = decode_rgb_tensor(_read_bytes(self.images[index]))
        try:
            label = decode_label(_read_bytes(self.labels[index]))
        except Exception as error:
            raise ValueError(f"label {self.labels[index]} unreadable: {error}") from error
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} px, "
                f"its image {image.shape[2]}x{image.shape[1]} px"
            )
        if self.class_list.reduce_zero_label:
            label = reduce_zero_label(label)
        return (tv_tensors.Image(image), tv_tensors.Mask(label)), mode


def open_segmentation(
    root: str | Path,
    split: str,
    transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
) -> SegmentationFolder:
    """Split `split` ("train"/"training" or "val"/"validation") of the segmentation folder at
    `root`, with the classes of `read_class_list(root)`."""
    return SegmentationFolder(root, split, read_class_list(root), transform)


def _pair_files(root: Path, split: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(image paths, their label paths, files that are not images, images without a label)."""
    if split not in SPLIT_FOLDERS:
        raise TwinsError(
            f"unknown split {split!r}; use one of {', '.join(SPLIT_FOLDERS)}", argument="split"
        )
    folder = SPLIT_FOLDERS[split]
    image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
    layout = f"{root}/images/{folder}/*.jpg and {root}/annotations/{folder}/*.png (ADE20K layout)"
    for needed in (image_dir, label_dir):
        if not needed.is_dir():
            raise TwinsError(
                f"segmentation folder {needed} not found: expected {layout}; set data_url",
                argument="data_url",
            )
    label_names = {name for name in os.listdir(label_dir) if name.lower().endswith(".png")}
    images, labels, left_out, unlabelled = [], [], [], []
    for name in sorted(os.listdir(image_dir)):
        path = image_dir / name
        if not path.is_file():
            continue
        if not is_image_file(name):
            left_out.append(str(path))
        elif f"{Path(name).stem}.png" in label_names:
            images.append(str(path))
            labels.append(str(label_dir / f"{Path(name).stem}.png"))
        else:
            unlabelled.append(str(path))
    if not images:
        raise TwinsError(
            f"no image with an annotation in {image_dir}: expected {layout}; add images",
            argument="data_url",
        )
    for found, what in ((left_out, "files not images"), (unlabelled, "images without a label")):
        if found:
            logger.warning("%d %s in %s left out (e.g. %s)", len(found), what, image_dir, found[0])
    return images, labels, left_out, unlabelled


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
