"""A segmenter's calibration folder for the int8 export: a folder in the ADE20K layout that
the segment task reads (`images/<split>/`, `annotations/<split>/`, optional `classes.json`), its
validation split (its training split where it has no other), prepared as the model's file says
(keep-ratio resize to `img_scale`, normalisation: `SegTestTransform`), scored by mIoU against
the label PNGs at the original size, as `twins eval` scores the whole-image test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins.errors import TwinsError
from twins.export.calibration import CalibrationSet
from twins.tasks.segment.data import SegmentationFolder, open_segmentation
from twins.tasks.segment.metrics import SegmentationMetrics, predict_labels
from twins.tasks.segment.transforms import IMG_SCALE, MEAN, STD, SegTestTransform, pad_to_side


def segmenter_calibration(
    folder: str | os.PathLike, metadata: Mapping[str, Any], num_classes: int, smallest: int
) -> CalibrationSet:
    """The calibration set of `folder` for a segmenter of `num_classes` whose graph takes
    sides of `smallest` pixels and more."""
    root = Path(folder).expanduser()
    split = "validation" if (root / "images" / "validation").is_dir() else "training"
    dataset = _opened(root, split)
    if len(dataset.classes) != num_classes:
        raise TwinsError(
            f"calibration folder {folder} has {len(dataset.classes)} classes, the model "
            f"{num_classes}: calibrate on data of the classes the model was trained on",
            argument="calibration",
        )
    described = metadata.get("preprocessing")
    described = described if isinstance(described, Mapping) else {}
    transform = SegTestTransform(
        tuple(described.get("img_scale") or IMG_SCALE),
        tuple(described.get("mean") or MEAN),
        tuple(described.get("std") or STD),
    )

    def load(sample: tuple[str, Any]) -> tuple[torch.Tensor, Any]:
        read = dataset[sample[1]]
        if read is None:
            raise TwinsError(
                f"calibration image {sample[0]} or its label cannot be read: remove the pair",
                argument="calibration",
            )
        image = transform.image(read[0].as_subclass(torch.Tensor))
        label = read[1].as_subclass(torch.Tensor).long()
        return pad_to_side(image, smallest)[None], (label, tuple(image.shape[-2:]))

    def score(outputs: list[tuple[np.ndarray, Any]]) -> float:
        metrics = SegmentationMetrics(num_classes, dataset.ignore_index)
        for logits, (label, (height, width)) in outputs:
            cropped = torch.from_numpy(logits)[..., :height, :width]
            metrics.update(predict_labels(cropped, label.shape)[0], label)
        return float(metrics.compute()["mIoU"])

    samples = [(path, index) for index, path in enumerate(dataset.images)]
    return CalibrationSet(samples, load, score, "mIoU")


def _opened(root: Path, split: str) -> SegmentationFolder:
    try:
        return open_segmentation(root, split)
    except TwinsError as error:  # its fix names data_url; here the folder is the calibration
        raise TwinsError(
            f"calibration folder: {error}".replace("; set data_url", ""),
            argument="calibration",
        ) from error
