"""The segmentation loss as mmseg 0.12 averages it: over all pixels, ignored ones counting 0."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from twins.tasks.segment.loss import pixel_accuracy, pixel_cross_entropy, segmentation_loss


def test_loss_is_the_mean_over_all_pixels_ignored_ones_included():
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # 1 x 2 x 1 x 3
    label = torch.tensor([[[0, 1, 255]]])
    first = -math.log(math.exp(2) / (math.exp(2) + 1))
    second = -math.log(math.e / (1 + math.e))
    loss = pixel_cross_entropy(logits, label)
    assert float(loss) == pytest.approx((first + second) / 3)
    labelled_mean = F.cross_entropy(logits, label, ignore_index=255)
    assert float(labelled_mean) == pytest.approx((first + second) / 2)
    assert not torch.isclose(loss, labelled_mean)


def test_logits_are_resized_to_the_label_first():
    logits = torch.randn(2, 3, 4, 4)
    label = torch.randint(0, 3, (2, 8, 8))
    label[:, :2] = 255
    resized = F.interpolate(logits, (8, 8), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(resized, label, ignore_index=255, reduction="none")
    assert torch.allclose(pixel_cross_entropy(logits, label), per_pixel.sum() / label.numel())


def test_aux_loss_is_weighted_and_added():
    label = torch.randint(0, 3, (1, 8, 8))
    out, aux = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4, 4)
    total, parts = segmentation_loss({"out": out, "aux": aux}, label, aux_weight=0.4)
    assert set(parts) == {"decode.loss_seg", "aux.loss_seg"}
    assert torch.allclose(parts["aux.loss_seg"], 0.4 * pixel_cross_entropy(aux, label))
    assert torch.allclose(total, parts["decode.loss_seg"] + parts["aux.loss_seg"])
    alone, parts = segmentation_loss({"out": out}, label)
    assert list(parts) == ["decode.loss_seg"] and torch.equal(alone, parts["decode.loss_seg"])


def test_accuracy_counts_every_pixel_as_mmseg_0_12():
    logits = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]]])
    label = torch.tensor([[[0, 1, 1, 255]]])
    assert float(pixel_accuracy(logits, label)) == pytest.approx(50.0)  # 2 right of 4 pixels
