"""Semantic segmentation data sets: images paired with label PNGs, in the ADE20K release layout.

Layout (ADEChallengeData2016's, which mmsegmentation reads)::

    root/images/training/<name>.jpg        root/annotations/training/<name>.png
    root/images/validation/<name>.jpg      root/annotations/validation/<name>.png
    root/classes.json                      (optional: the class list of any other data set)

An image is paired with the annotation of the same stem; an image of any extension of
`twins.data.images.IMAGE_EXTENSIONS` is read. A label PNG holds one class value per pixel, read
as Pillow reads it (`decode_label`): the palette indices of a palette PNG, the grey values of a
greyscale one, at any bit depth (Pillow writes a palette of 16 colours or fewer in 1, 2 or 4
bits, and a boolean mask as a 1-bit PNG of values 0 and 1).

Without `classes.json` the folder is ADE20K: its 150 classes (`twins.tasks.segment.ade20k`) and
`reduce_zero_label` (value 0 is "unlabelled" and becomes the ignore index 255, value i becomes
class i - 1, as mmsegmentation's `LoadAnnotations(reduce_zero_label=True)`). A folder of one's
own data says its classes in `classes.json`::

    {"classes": ["background", "cat", "dog"],          # class i has label value i
     "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],  # optional: one RGB colour per class
     "reduce_zero_label": false}                        # optional: true for ADE20K-style values

Pixels of value 255 (after reduction) are ignored by the loss and the metrics. Any other value
must be a class (below the number of classes): a label holding one is refused with a
`LabelValueError` naming the file and the value, in training and evaluation alike.

Broken files do not stop a run, as for classification (`twins.data.counted`): an image that
cannot be decoded, or a label PNG that cannot be decoded, is not one channel or differs in size
from its image, makes the sample None; it is counted in `dataset.skipped`, named once in a
warning and in `dataset.broken_files`, and the loader's collate leaves it out. Files that are not
images are listed in `dataset.left_out`; images without an annotation in `dataset.unlabelled`
(both named once in a warning when the data set is opened).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb_tensor, is_image_file
from twins.errors import TwinsError
from twins.tasks.segment.ade20k import ADE20K_CLASSES, ADE20K_PALETTE

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
# Pillow's modes of a one-channel PNG: 1-bit greyscale, 2- to 8-bit greyscale, palette, 16-bit.
LABEL_MODES = ("1", "L", "P", "I;16", "I;16B", "I")
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
    """A label PNG's bytes as an H x W tensor of its values as Pillow reads them: the palette
    indices of a palette PNG, the grey values of a greyscale one, at any bit depth (a 1-bit
    PNG, as Pillow writes a boolean mask, reads 0 and 1). uint8, or int32 for a 16-bit PNG;
    ValueError for a file that is not a PNG of one such channel."""
    with Image.open(io.BytesIO(data)) as png:
        if png.format != "PNG":
            raise ValueError(f"a {png.format} file, not a PNG")
        if png.mode not in LABEL_MODES:
            raise ValueError(
                f"a {png.mode} PNG; a label holds one channel of class values (greyscale or "
                "palette): convert colour masks to class indices"
            )
        values = np.asarray(png)
    return torch.from_numpy(values.astype(np.int32 if values.itemsize > 1 else np.uint8))


class LabelValueError(TwinsError):
    """A label value that is no class: the run stops on it, as on any user mistake. Raised in
    a loader worker, torch raises it again in the main process from a text of the worker's
    whole traceback; the one line is taken back from that text's last line."""

    def __init__(self, message: str) -> None:
        header = f"{type(self).__name__}: "
        if message.startswith("Caught ") and header in message:  # torch's ExceptionWrapper
            message = message.rstrip().rsplit(header, 1)[1]
        super().__init__(message, argument="data_url")


def check_label_values(
    label: torch.Tensor, path: str, classes: ClassList, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The stored `label` of the file at `path` as uint8, after `reduce_zero_label` where the
    class list says so; LabelValueError naming the file and a value that is no class."""
    count = len(classes.names)
    if classes.reduce_zero_label:  # stored 0 and 255 are ignored, i + 1 is class i
        bad = (label > count) & (label != IGNORE_INDEX)
        valid = f"values 1..{count} store classes 0..{count - 1}; 0 and 255 are ignored"
    else:
        bad = (label >= count) & (label != ignore_index)
        valid = f"values 0..{count - 1} are the classes; {ignore_index} is ignored"
    if bool(bad.any()):
        values = torch.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:5].tolist())
        raise LabelValueError(
            f"label {path} holds value{'s' if len(values) > 1 else ''} {shown}, which "
            f"{'are' if len(values) > 1 else 'is'} no class of the {count} in the data set "
            f"({valid}): fix the label file, or list every class in classes.json"
        )
    label = label.to(torch.uint8)
    return reduce_zero_label(label) if classes.reduce_zero_label else label


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
    `transform(image, label)` returns. None for a broken pair (see the module's docstring);
    LabelValueError for a label value that is no class nor `ignore_index`."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        classes: ClassList,
        transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = list(classes.names)
        self.class_list = classes
        self.ignore_index = ignore_index
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
        # A wrong value is the data set's mistake, not a broken file: it stops the run.
        label = check_label_values(label, self.labels[index], self.class_list, self.ignore_index)
        image, label = tv_tensors.Image(image), tv_tensors.Mask(label)
        if self.pair_transform is not None:
            image, label = self.pair_transform(image, label)
        return ImageSample(image, label, sample.converted)

    def _decode_pair(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
        """((image, stored label values), the image's stored mode); raises for a broken pair."""
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
        return (image, label), mode


def open_segmentation(
    root: str | Path,
    split: str,
    transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> SegmentationFolder:
    """Split `split` ("train"/"training" or "val"/"validation") of the segmentation folder at
    `root`, with the classes of `read_class_list(root)`."""
    return SegmentationFolder(root, split, read_class_list(root), transform, ignore_index)


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
