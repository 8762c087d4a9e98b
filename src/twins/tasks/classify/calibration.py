"""A classifier's calibration folder for the int8 export: class folders of images
(`DIR/<class>/<image>`, as torchvision's ImageFolder reads them), prepared as the model's file
says (`prediction_preprocessing`: its resize, crop and normalisation), scored by top-1 against
the folder labels.

A folder's class is the model's class of that name where the file names its classes, else the
folder's place in sorted order (ImageFolder's indices) when there are as many folders as the
model has classes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins.data.images import is_image_file, open_rgb
from twins.errors import TwinsError
from twins.export.calibration import CalibrationSet
from twins.tasks.classify.predict import prediction_preprocessing
from twins.tasks.classify.transforms import eval_transform


def class_indices(
    folder: Path, classes: Sequence[str], names: Sequence[str] | None, num_classes: int
) -> dict[str, int]:
    """Each class folder's class index in the model (see the module's notes)."""
    if names and len(names) == num_classes:
        index = {name: i for i, name in enumerate(names)}
        unknown = [name for name in classes if name not in index]
        if unknown:
            raise TwinsError(
                f"calibration folder {folder}: {', '.join(unknown[:3])} "
                f"{'is no class' if len(unknown) == 1 else 'are no classes'} of the model "
                f"(its classes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                "name the class folders as the model's classes",
                argument="calibration",
            )
        return index
    if len(classes) != num_classes:
        raise TwinsError(
            f"calibration folder {folder} has {len(classes)} class folders for a model of "
            f"{num_classes} classes whose file does not name them: give one folder per class, "
            "in the order of the model's classes when sorted",
            argument="calibration",
        )
    return {name: i for i, name in enumerate(classes)}


def classifier_calibration(
    folder: str | os.PathLike, metadata: Mapping[str, Any], num_classes: int
) -> CalibrationSet:
    """The calibration set of a class-folder `folder` for a classifier of `num_classes`."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TwinsError(
            f"calibration folder {folder} not found: name a folder of class folders of images",
            argument="calibration",
        )
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    index = class_indices(root, classes, metadata.get("class_names"), num_classes)
    samples = [
        (str(path), index[name])
        for name in classes
        for path in sorted((root / name).iterdir())
        if path.is_file() and is_image_file(path.name)
    ]
    transform = eval_transform(prediction_preprocessing(metadata.get("preprocessing")))

    def load(sample: tuple[str, Any]) -> tuple[torch.Tensor, Any]:
        image, _ = open_rgb(sample[0])
        return transform(image)[None], sample[1]

    return CalibrationSet(samples, load, top1, "top-1")


def top1(outputs: list[tuple[np.ndarray, Any]]) -> float:
    """Top-1 accuracy (%) of (logits, class index) pairs."""
    hits = [int(np.argmax(logits[0]) == target) for logits, target in outputs]
    return 100.0 * sum(hits) / max(len(hits), 1)
