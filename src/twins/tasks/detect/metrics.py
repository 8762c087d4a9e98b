"""COCO box and mask AP with pycocotools' COCOeval, as mmdetection 2.8 reports it.

`detections_to_coco` turns a detector's output for one image (torchvision's dict: `boxes` XYXY,
`labels` 1..K, `scores`, `masks` N x 1 x H x W probabilities) into COCO result objects: category
ids through the data set's `CategoryMap`, boxes as x, y, w, h and masks as RLE (binarised at 0.5)
in the original image's pixels, rescaled from the size the model saw when the two differ. The
same objects are what `twins predict --json` prints, so pycocotools scores that output as it
scores an evaluation.

`gather_by_image` collects every process's results under DDP (each image once: a distributed
sampler repeats images to even out the processes), and `coco_metrics` runs COCOeval and returns
its twelve numbers per type in %, as `bbox_AP`, `bbox_AP50`, `bbox_AP75`, `bbox_APs`, `bbox_APm`,
`bbox_APl`, `bbox_AR1`, `bbox_AR10`, `bbox_AR100`, `bbox_ARs`, `bbox_ARm`, `bbox_ARl` (and
`segm_...`), with `images`, the number of images scored. COCOeval's -1 (no ground truth in
that area range) stays -1.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from twins.tasks.detect.data import CategoryMap

# COCOeval.stats in order (maxDets 100 unless named).
METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
MASK_THRESHOLD = 0.5


def detections_to_coco(
    detection: dict[str, torch.Tensor],
    image_id: Any,
    file_name: str,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    categories: CategoryMap,
) -> list[dict[str, Any]]:
    """COCO result objects (`image_id`, `file_name`, `category_id`, `bbox` as x, y, w, h in the
    original pixels, `score`, and `segmentation` as RLE with str counts when there are masks)
    for one image's detections, made on an image of `input_size` (height, width) that was
    `original_size` as stored."""
    boxes = tv_tensors.BoundingBoxes(
        detection["boxes"].detach().float().cpu(), format="XYXY", canvas_size=tuple(input_size)
    )
    if tuple(input_size) != tuple(original_size):
        boxes = F.resize(boxes, list(original_size))
    boxes = F.convert_bounding_box_format(boxes, new_format="XYWH")
    labels = detection["labels"].tolist()
    scores = detection["scores"].tolist()
    results = [
        {
            "image_id": image_id,
            "file_name": file_name,
            "category_id": categories.category_id(int(label)),
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        for box, label, score in zip(boxes.tolist(), labels, scores, strict=True)
    ]
    masks = detection.get("masks")
    if masks is not None and len(results):
        for result, rle in zip(results, masks_to_rle(masks, original_size), strict=True):
            result["segmentation"] = rle
    return results


def masks_to_rle(masks: torch.Tensor, original_size: tuple[int, int]) -> list[dict[str, Any]]:
    """COCO RLEs (counts as str, ready for JSON) of N x 1 x H x W mask probabilities, resized
    to `original_size` and binarised at MASK_THRESHOLD there."""
    probabilities = masks.detach().float().cpu().reshape(-1, 1, *masks.shape[-2:])
    if tuple(probabilities.shape[-2:]) != tuple(original_size):
        probabilities = F.resize(probabilities, list(original_size), antialias=True)
    binary = (probabilities[:, 0] >= MASK_THRESHOLD).numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def gather_by_image(by_image: dict[Any, list[dict[str, Any]]]) -> dict[Any, list[dict[str, Any]]]:
    """Every process's {image id: result objects} merged, each image once (its first
    process's results); this process's own dict when not distributed. Every process calls it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return by_image
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, by_image)
    return merge_by_image(gathered)


def merge_by_image(
    parts: Iterable[dict[Any, list[dict[str, Any]]]],
) -> dict[Any, list[dict[str, Any]]]:
    """{image id: result objects} of all `parts`, an image found in several taken from the first."""
    merged: dict[Any, list[dict[str, Any]]] = {}
    for part in parts:
        for image_id, results in part.items():
            merged.setdefault(image_id, results)
    return merged


def coco_metrics(
    coco: COCO, by_image: dict[Any, list[dict[str, Any]]], iou_types: Iterable[str] = ("bbox",)
) -> dict[str, float]:
    """COCOeval's twelve numbers (in %) for each of `iou_types` ("bbox", "segm") on the images
    of `by_image` ({image id: result objects}, an image without detections too), against the
    ground truth `coco` (`CocoDataset.coco`)."""
    image_ids = sorted(by_image)
    results = [result for image_id in image_ids for result in by_image[image_id]]
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        if not results:  # loadRes refuses an empty list: nothing detected scores 0
            metrics.update({f"{iou_type}_{name}": 0.0 for name in METRIC_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports on stdout
            detections = coco.loadRes(_for_type(results, iou_type))
            evaluation = COCOeval(coco, detections, iou_type)
            evaluation.params.imgIds = image_ids
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        for name, value in zip(METRIC_NAMES, evaluation.stats, strict=True):
            metrics[f"{iou_type}_{name}"] = float(value) * 100 if value >= 0 else -1.0
    metrics["images"] = len(image_ids)
    return metrics


def _for_type(results: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """loadRes reads boxes when they are there and masks otherwise; box results go without
    their masks (cheaper), mask results keep their boxes (mmdetection's area for each)."""
    if iou_type == "bbox":
        return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    if any("segmentation" not in r for r in results):
        raise ValueError("segm evaluation needs a segmentation in every result (a mask model)")
    return [dict(r) for r in results]
