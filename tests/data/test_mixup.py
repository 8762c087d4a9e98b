"""build_mixup: timm's Mixup wired to the seed's keys, or None when both alphas are 0."""

import torch
from timm.data import Mixup

from twins.tasks.classify.mixup import build_mixup


def test_no_mixup_when_both_alphas_are_zero(make_config):
    assert build_mixup(make_config(mix_up=0.0, cutmix=0.0)) is None


def test_mixup_reads_the_seed_keys(make_config):
    cfg = make_config(
        mix_up=0.8,
        cutmix=1.0,
        mixup_prob=0.7,
        switch_prob=0.4,
        mixup_mode="pair",
        label_smoothing=0.2,
        num_classes=5,
    )
    mixup = build_mixup(cfg)
    assert isinstance(mixup, Mixup)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha) == (0.8, 1.0)
    assert (mixup.mix_prob, mixup.switch_prob, mixup.mode) == (0.7, 0.4, "pair")
    assert (mixup.label_smoothing, mixup.num_classes) == (0.2, 5)


def test_mixup_only_gives_soft_smoothed_targets(make_config):
    mixup = build_mixup(make_config(mix_up=1.0, cutmix=0.0, label_smoothing=0.1, num_classes=4))
    images = torch.randn(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, targets = mixup(images.clone(), labels)
    assert mixed.shape == images.shape and targets.shape == (6, 4)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    assert targets.min() >= 0.1 / 4 - 1e-6  # smoothing folded in: no class has zero mass
