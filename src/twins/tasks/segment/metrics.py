"""Semantic segmentation evaluation as mmsegmentation 0.12 computes it
(`mmseg/core/evaluation/metrics.py`), and the rules that turn logits into a label map.

Per class, the pixel counts of intersection (prediction = label = class), union, prediction and
label are summed over the whole evaluated set, pixels labelled `ignore_index` (255) left out:
IoU = intersection / union and Acc = intersection / label area per class; mIoU and mAcc are
their means over the classes with a defined value (a class absent from both prediction and
label gives 0 / 0 = NaN and is skipped), aAcc = all correct pixels / all labelled pixels. All
in %. Under DDP, `all_reduce()` sums the counts of every process before `compute()`.

Predictions are made at the original image size: the logits of the resized input are resized
back bilinearly (align_corners False) and argmaxed (`predict_labels`; mmseg's softmax before the
argmax changes no label and is left out); with test-time augmentation the softmax probabilities
of every scale and flip are averaged first (`predict_tta`, mmsegmentation's `--aug-test`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from twins.tasks.segment.transforms import IMG_SCALE, MEAN, STD, TTA_RATIOS, normalize, resize_pair

IGNORE_INDEX = 255
# `predict_labels` resizes all classes at once where they take at most WHOLE_BYTES at the full
# size (the fastest: most ADE20K images at 150 classes), else RESIZE_BYTES' worth at a time.
WHOLE_BYTES = 512 * 2**20
RESIZE_BYTES = 128 * 2**20


class SegmentationMetrics:
    """Accumulates per-class pixel counts over a data set; `compute()` gives mmseg's metrics."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        # Rows: intersection, union, prediction area, label area.
        self.counts = torch.zeros(4, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add one prediction (class indices) and its label map, of the same shape (a batch of
        either too). Label values outside 0..num_classes - 1 other than the ignore index are
        left out of the label area, as mmseg's histogram leaves them."""
        if pred.shape != label.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ"
            )
        keep = label != self.ignore_index
        pred, label = pred[keep].long(), label[keep].long()
        hit = pred[pred == label]
        areas = [self._histogram(x) for x in (hit, pred, label)]
        intersection, pred_area, label_area = areas
        union = pred_area + label_area - intersection
        self.counts += torch.stack([intersection, union, pred_area, label_area]).cpu()

    def _histogram(self, values: torch.Tensor) -> torch.Tensor:
        values = values[(values >= 0) & (values < self.num_classes)]
        return torch.bincount(values, minlength=self.num_classes)

    def all_reduce(self) -> None:
        """Sum the counts of every process (when torch.distributed is initialised)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        counts = self.counts
        if dist.get_backend() == "nccl":
            counts = counts.cuda()
        dist.all_reduce(counts)
        self.counts = counts.cpu()

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """`mIoU`, `mAcc`, `aAcc` (in %), and per class `IoU` and `Acc` (lists, in %, NaN where
        0 / 0); with `class_names`, also `IoU.<name>` and `Acc.<name>` as the official logs
        name them (in %, where the logs hold fractions)."""
        intersection, union, _, label_area = self.counts.double()
        iou = intersection / union
        acc = intersection / label_area
        result = {
            "mIoU": _nan_mean(iou) * 100,
            "mAcc": _nan_mean(acc) * 100,
            "aAcc": float(intersection.sum() / label_area.sum()) * 100,
            "IoU": (iou * 100).tolist(),
            "Acc": (acc * 100).tolist(),
        }
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
            for key in ("IoU", "Acc"):
                result |= {f"{key}.{n}": v for n, v in zip(class_names, result[key], strict=True)}
        return result


def _nan_mean(values: torch.Tensor) -> float:
    defined = values[~values.isnan()]
    return float(defined.mean()) if len(defined) else math.nan


def probabilities_at(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class probabilities (N x K x H x W) of `logits` resized bilinearly to `size` (H, W)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


def predict_labels(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The label map (N x H x W class indices) at the original `size` for network logits.

    Where all classes at the full size would take more than WHOLE_BYTES, they are resized a
    group at a time, each group by torch's own kernel (a class's plane is the same floats as
    when all are resized at once), and a running maximum keeps each pixel's best class, a tie
    going to the lower class as in `argmax`. Memory then holds a few full-size planes
    (RESIZE_BYTES), not one per class: 150 classes at 24 megapixels would be 14 GB, twice that
    with a softmax."""
    size = tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits.argmax(dim=1)
    batch, classes = logits.shape[:2]
    plane = batch * size[0] * size[1] * logits.element_size()
    if classes * plane <= WHOLE_BYTES:
        resized = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return resized.argmax(dim=1)
    group = max(1, RESIZE_BYTES // plane)
    # uint8 holds up to 256 classes in an eighth of int64's memory while the maxima run.
    labels = torch.zeros((batch, *size), dtype=torch.uint8 if classes <= 256 else torch.int64)
    labels = labels.to(logits.device)
    best = None
    for start in range(0, classes, group):
        resized = F.interpolate(
            logits[:, start : start + group], size=size, mode="bilinear", align_corners=False
        )
        for offset in range(resized.shape[1]):
            value = resized[:, offset]
            if best is None:
                best = value.clone()
                continue
            better = value > best  # strictly: a tie keeps the lower class
            labels.masked_fill_(better, start + offset)
            torch.maximum(best, value, out=best)
        del resized, value
    del best  # before the int64 copy: the peak is the planes' or that copy's, not both
    return labels.long()


def predict_tta(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    ratios: Sequence[float] = TTA_RATIOS,
    flip: bool = True,
    img_scale: tuple[int, int] = IMG_SCALE,
    mean: tuple = MEAN,
    std: tuple = STD,
) -> torch.Tensor:
    """Multi-scale (+ flip) class probabilities (K x H x W) of a uint8 RGB image (3 x H x W).

    For each ratio r the image is resized keep-ratio to `img_scale` times r (as
    `SegTestTransform` does at r = 1), normalised and given to `model` (a 1 x 3 x h x w batch ->
    logits, or a dict with "out"); with `flip` the mirrored image too, its output mirrored back.
    Each output's probabilities at the original size are averaged over all of them."""
    size = image.shape[-2:]
    total, count = None, 0
    for ratio in ratios:
        scale = (int(img_scale[0] * ratio), int(img_scale[1] * ratio))
        resized, _ = resize_pair(image, None, scale)
        batch = normalize(resized.as_subclass(torch.Tensor), mean, std)[None]
        for flipped in (False, True) if flip else (False,):
            inputs = batch.flip(-1) if flipped else batch
            logits = model(inputs)
            logits = logits["out"] if isinstance(logits, dict) else logits
            probs = probabilities_at(logits, size)[0]
            probs = probs.flip(-1) if flipped else probs
            total = probs if total is None else total + probs
            count += 1
    return total / count
