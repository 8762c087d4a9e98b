"""mmseg 0.12's segmentation metrics against a small example computed by hand, summed over the
whole set and across processes; the prediction and test-time augmentation rules."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from twins.tasks.segment import metrics
from twins.tasks.segment.metrics import SegmentationMetrics, predict_labels, predict_tta

LABEL = torch.tensor([[0, 0, 1, 255], [1, 1, 0, 255]])
PRED = torch.tensor([[0, 1, 1, 2], [1, 2, 0, 0]])


def test_metrics_of_a_hand_computed_example():
    # Labelled pixels (pred, label): (0,0) (1,0) (1,1) (1,1) (2,1) (0,0); the 255 column is out.
    # class 0: intersection 2, union 3; class 1: 2 of 4; class 2: predicted once, never labelled
    # (IoU 0, Acc 0/0); class 3: absent from both (0/0, skipped).
    metrics = SegmentationMetrics(num_classes=4)
    metrics.update(PRED, LABEL)
    result = metrics.compute()
    assert result["IoU"][:3] == pytest.approx([200 / 3, 50.0, 0.0])
    assert math.isnan(result["IoU"][3]) and math.isnan(result["Acc"][2])
    assert result["mIoU"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3 * 100)
    assert result["mAcc"] == pytest.approx(200 / 3)
    assert result["aAcc"] == pytest.approx(400 / 6)
    named = metrics.compute(class_names=["wall", "bed ", "sky", "tree"])
    assert named["IoU.bed "] == pytest.approx(50.0) and math.isnan(named["Acc.sky"])


def test_counts_are_summed_over_the_set_not_averaged_per_image():
    big_label, big_pred = (
        torch.zeros(10, 10, dtype=torch.long),
        torch.zeros(10, 10, dtype=torch.long),
    )
    small_label, small_pred = torch.ones(1, 2, dtype=torch.long), torch.tensor([[1, 0]])
    metrics = SegmentationMetrics(num_classes=2)
    metrics.update(big_pred, big_label)
    metrics.update(small_pred, small_label)
    # class 0: I 100, U 101; class 1: I 1, U 2 -> mIoU (100/101 + 1/2) / 2
    assert metrics.compute()["mIoU"] == pytest.approx((100 / 101 + 0.5) / 2 * 100)
    batch = SegmentationMetrics(num_classes=4)
    batch.update(torch.stack([PRED, PRED]), torch.stack([LABEL, LABEL]))
    single = SegmentationMetrics(num_classes=4)
    single.update(PRED, LABEL)
    assert batch.compute()["mIoU"] == pytest.approx(single.compute()["mIoU"])
    assert torch.equal(batch.counts, 2 * single.counts)


def _rank_metrics(rank: int, world: int, port: int, out) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        metrics = SegmentationMetrics(num_classes=4)
        metrics.update(PRED[rank : rank + 1], LABEL[rank : rank + 1])  # each rank one row
        metrics.all_reduce()
        torch.save(metrics.counts, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_the_counts_of_every_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Forked (not spawned) ranks: nothing to import again, so the test takes a second.
    mp.start_processes(_rank_metrics, args=(2, port, tmp_path), nprocs=2, start_method="fork")
    whole = SegmentationMetrics(num_classes=4)
    whole.update(PRED, LABEL)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), whole.counts)


def test_logits_are_resized_back_bilinearly_then_argmaxed():
    logits = torch.tensor([[[[2.0, -2.0]], [[-2.0, 2.0]]]])  # 1 x 2 classes x 1 x 2
    labels = predict_labels(logits, (3, 4))
    assert labels.tolist() == [[[0, 0, 1, 1]] * 3]
    expected = F.interpolate(logits, (3, 4), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(labels, expected)


@pytest.mark.parametrize("budget", [1, 3 * 4 * 2 * 97 * 131, 2**30])  # 1, 3 or all classes
def test_labels_a_group_of_classes_at_a_time_are_the_full_size_softmaxs(monkeypatch, budget):
    """The same labels as the argmax of the softmax of all classes resized at once (the test
    mmseg runs), whatever the number of classes resized together."""
    monkeypatch.setattr(metrics, "WHOLE_BYTES", 0 if budget < 2**30 else budget)
    monkeypatch.setattr(metrics, "RESIZE_BYTES", budget)
    generator = torch.Generator().manual_seed(0)
    for classes, size in ((2, (97, 131)), (11, (97, 131)), (150, (40, 1000))):
        logits = torch.randn(2, classes, 23, 17, generator=generator) * 4
        resized = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        assert torch.equal(predict_labels(logits, size), resized.softmax(1).argmax(1))
    tied = torch.zeros(1, 5, 3, 3)
    tied[:, 2:] = 1.0  # classes 2, 3 and 4 tie everywhere: argmax's rule keeps the lowest
    assert predict_labels(tied, (7, 5)).unique().tolist() == [2]


def test_tta_averages_probabilities_over_six_scales_and_flips():
    seen = []

    def model(batch):  # logits that grow left to right, whatever the image
        seen.append(tuple(batch.shape))
        ramp = torch.linspace(-3, 3, batch.shape[-1]).expand(batch.shape[-2], -1)
        return {"out": torch.stack([ramp, -ramp])[None]}

    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    probs = predict_tta(model, image, img_scale=(64, 16))
    heights = [8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28]
    assert [s[2] for s in seen] == heights and all(s[3] == s[2] * 3 // 2 for s in seen)
    assert probs.shape == (2, 20, 30) and torch.allclose(probs.sum(0), torch.ones(20, 30))
    assert torch.allclose(probs, probs.flip(-1))  # each flip undone: the average is mirrored
    unflipped = predict_tta(model, image, img_scale=(64, 16), flip=False)
    assert not torch.allclose(unflipped, unflipped.flip(-1))
