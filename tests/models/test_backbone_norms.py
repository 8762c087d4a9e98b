"""SVT's per-stage norms: each normalised stage map is also the next stage's input, as in the
official dense code (`extra_norm`); PCPVT has none."""

from __future__ import annotations

import torch

from factories import TINY_MODEL
from twins.models.backbone import dense_backbone


def test_svt_stage_norm_feeds_the_next_stage() -> None:
    torch.manual_seed(0)
    backbone = dense_backbone("svt_small", **TINY_MODEL).eval()
    images = torch.randn(1, 3, 64, 96)
    before = backbone(images)
    with torch.no_grad():
        backbone.norm_list[0].bias.add_(torch.linspace(-1, 1, backbone.out_channels[0]))
    after = backbone(images)
    shift = torch.linspace(-1, 1, backbone.out_channels[0]).view(1, -1, 1, 1)
    assert torch.allclose(after[0], before[0] + shift, atol=1e-5)
    assert not torch.allclose(after[1], before[1], atol=1e-3)  # and stage 2 sees the change
    assert [m.shape[1] for m in after] == backbone.out_channels


def test_pcpvt_stages_are_the_classifier_intermediates() -> None:
    backbone = dense_backbone("pcpvt_small", **TINY_MODEL).eval()
    assert backbone.norm_list is None
    images = torch.randn(1, 3, 64, 64)
    expected = backbone.forward_intermediates(images, intermediates_only=True)
    for got, want in zip(backbone(images), expected, strict=True):
        assert torch.equal(got, want)
