"""COCO AP: detections back in COCO's terms, COCOeval's numbers, JSON pycocotools reads, and each
image once across processes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from twins.tasks.detect.data import open_coco_split
from twins.tasks.detect.metrics import (
    METRIC_NAMES,
    coco_metrics,
    detections_to_coco,
    gather_by_image,
    merge_by_image,
)
from twins.tasks.detect.transforms import eval_transform


def ground_truth_detections(data, shift: dict[int, float] | None = None) -> dict:
    """{image id: result objects} of each image's own targets as detections (score 1), made on
    the transformed image; `shift` moves the boxes of a category id right by that many
    transformed pixels."""
    by_image = {}
    for index in range(len(data)):
        image, target = data[index]
        boxes = target["boxes"].as_subclass(torch.Tensor).clone()
        for category, pixels in (shift or {}).items():
            boxes[target["labels"] == data.categories.label(category), 0::2] += pixels
        detection = {
            "boxes": boxes,
            "labels": target["labels"],
            "scores": torch.ones(len(boxes)),
            "masks": target["masks"].float()[:, None],
        }
        by_image[target["image_id"]] = detections_to_coco(
            detection,
            target["image_id"],
            data.file_name(index),
            tuple(image.shape[-2:]),
            target["orig_size"],
            data.categories,
        )
    return by_image


def test_ground_truth_as_detections_scores_100_after_rescaling(coco_val):
    # The model sees the images 2x and 3x larger; results come back in the original pixels.
    data = open_coco_split(coco_val, "val", eval_transform(96, 400), with_masks=True)
    metrics = coco_metrics(data.coco, ground_truth_detections(data), ("bbox", "segm"))
    assert set(metrics) == {f"{t}_{n}" for t in ("bbox", "segm") for n in METRIC_NAMES} | {"images"}
    assert metrics["images"] == 3
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
            assert metrics[f"{iou_type}_{name}"] == pytest.approx(100), (iou_type, name)
        # Every object is small (under 32 x 32): COCOeval has nothing to score as medium or large.
        assert metrics[f"{iou_type}_APm"] == metrics[f"{iou_type}_APl"] == -1


def test_a_known_perturbation_gives_the_expected_ap(coco_val):
    data = open_coco_split(coco_val, "val", with_masks=True)
    # The one cat-7 box moved 4 px right: IoU 20/28 = 0.71, a hit at IoU 0.5..0.7 (5 of the 10
    # thresholds), so that category scores 50 and the mean over the 3 categories 250/3.
    metrics = coco_metrics(data.coco, ground_truth_detections(data, shift={7: 4.0}))
    assert metrics["bbox_AP"] == pytest.approx(250 / 3)
    assert metrics["bbox_AP50"] == pytest.approx(100)
    assert metrics["bbox_AP75"] == pytest.approx(200 / 3)
    # No cat-7 detection at all: that category scores 0.
    by_image = ground_truth_detections(data)
    by_image = {i: [r for r in rs if r["category_id"] != 7] for i, rs in by_image.items()}
    assert coco_metrics(data.coco, by_image)["bbox_AP"] == pytest.approx(200 / 3)
    # Nothing detected on any image.
    nothing = coco_metrics(data.coco, {1: [], 2: [], 3: []})
    assert nothing["bbox_AP"] == 0 and nothing["images"] == 3


def test_results_as_json_load_in_pycocotools_and_score_the_same(coco_val):
    data = open_coco_split(coco_val, "val", eval_transform(96, 400), with_masks=True)
    by_image = ground_truth_detections(data, shift={7: 8.0})
    metrics = coco_metrics(data.coco, by_image, ("bbox", "segm"))
    text = json.dumps([r for results in by_image.values() for r in results])
    results = json.loads(text)
    assert {r["file_name"].rsplit("/", 1)[1] for r in results} == {"v1.png", "v2.png"}
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    # pycocotools by hand, on what the JSON holds.
    gt = copy.deepcopy(data.coco)
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert metrics["bbox_AP"] == pytest.approx(evaluation.stats[0] * 100)
    assert metrics["bbox_AP"] < 100


def test_one_detection_in_coco_terms(coco_val):
    data = open_coco_split(coco_val, "val")
    mask = torch.zeros(1, 1, 96, 128)
    mask[0, 0, 12:44, 8:48] = 0.9
    detection = {
        "boxes": torch.tensor([[8.0, 12.0, 48.0, 44.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.75]),
        "masks": mask,
    }
    (result,) = detections_to_coco(detection, 1, "v1.png", (96, 128), (48, 64), data.categories)
    assert result["category_id"] == 7  # label 2: the second of the sorted ids 3, 7, 11
    assert result["bbox"] == [4.0, 6.0, 20.0, 16.0]  # x, y, w, h in the original pixels
    assert result["score"] == 0.75 and result["image_id"] == 1 and result["file_name"] == "v1.png"
    decoded = mask_utils.decode(
        {**result["segmentation"], "counts": result["segmentation"]["counts"]}
    )
    expected = np.zeros((48, 64), dtype=np.uint8)
    expected[6:22, 4:24] = 1
    assert np.array_equal(decoded, expected)
    boxes_only = {k: v for k, v in detection.items() if k != "masks"}  # RetinaNet's output
    (result,) = detections_to_coco(boxes_only, 1, "v1.png", (96, 128), (48, 64), data.categories)
    assert "segmentation" not in result
    with pytest.raises(ValueError, match="segm evaluation needs a segmentation"):
        coco_metrics(data.coco, {1: [result]}, ("segm",))
    none = {k: v[:0] for k, v in detection.items()}
    assert detections_to_coco(none, 1, "v1.png", (96, 128), (48, 64), data.categories) == []


def _gather_on_rank(rank: int, init_file: str, returned: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # Rank 1 was given image 1 again (a sampler evening out the ranks): it counts once.
        own = {
            0: {1: [{"image_id": 1, "rank": 0}], 2: []},
            1: {3: [{"image_id": 3}], 1: [{"rank": 1}]},
        }
        returned[rank] = gather_by_image(own[rank])
    finally:
        dist.destroy_process_group()


def test_an_image_scored_by_several_processes_counts_once():
    parts = [{1: [{"rank": 0}], 2: []}, {3: [{"rank": 1}], 1: [{"rank": 1}]}]
    assert merge_by_image(parts) == {1: [{"rank": 0}], 2: [], 3: [{"rank": 1}]}


@pytest.mark.slow  # two processes start, each importing torch: long on a small machine
def test_every_process_gets_each_image_once(tmp_path):
    with mp.Manager() as manager:
        returned = manager.dict()
        mp.spawn(_gather_on_rank, args=(str(tmp_path / "init"), returned), nprocs=2)
        results = dict(returned)
    assert (
        results[0] == results[1] == {1: [{"image_id": 1, "rank": 0}], 2: [], 3: [{"image_id": 3}]}
    )
    assert gather_by_image({5: []}) == {5: []}  # not distributed: this process's own
