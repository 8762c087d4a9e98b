"""What a task gives the int8 export of its calibration folder (`Task.calibration_set`): the
images with their targets, how one becomes the network's input, and the task's metric.

The int8 export (`twins.export.int8`) splits the samples in two, calibrates on one part and
scores the other, the held-out part, before and after quantisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class CalibrationSet:
    # (image file, target) pairs, in a fixed order: a classifier's class index, a segmenter's
    # label file.
    samples: Sequence[tuple[str, Any]]
    # A sample -> (the network's input, 1 x 3 x H x W, as the task's evaluation prepares it;
    # what `score` compares the network's output with).
    load: Callable[[tuple[str, Any]], tuple[torch.Tensor, Any]]
    # [(network output, loaded target), ...] of the held-out part -> the metric, in %.
    score: Callable[[list[tuple[np.ndarray, Any]]], float]
    # The metric's name in a sentence: "top-1", "mIoU".
    metric: str
