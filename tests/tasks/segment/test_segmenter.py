"""The 12 segmenters (`semantic_fpn_<variant>`, `upernet_<variant>`) from the user's side:
sizes, output shapes, the backbone maps at a test-time size, gradients."""

from __future__ import annotations

import pytest
import torch

import twins
from twins.errors import TwinsError
from twins.tasks import model_names

# The lean dense backbone (no classifier head or final norm; SVT with its per-stage norms) and
# the official heads on it, recomputed from the official layer shapes (dense FACTS §4).
LEAN_BACKBONE = {
    "pcpvt_small": 23_592_192,
    "pcpvt_base": 43_314_432,
    "pcpvt_large": 60_475_648,
    "svt_small": 23_548_672,
    "svt_base": 55_303_296,
    "svt_large": 98_248_192,
}
HEADS = {  # by stage widths: the three PCPVT sizes share theirs
    "semantic_fpn": {"pcpvt": 4_266_646, "svt_small": 4_250_262, "svt_base": 4_373_142,
                     "svt_large": 4_496_022},
    "upernet": {"pcpvt": 30_487_852, "svt_small": 30_307_628, "svt_base": 32_421_164,
                "svt_large": 34_534_700},
}  # fmt: skip
# A small backbone whose widths every variant's head counts divide.
TINY = {"embed_dims": [16, 32, 40, 64], "num_heads": [1, 2, 5, 8], "depths": [1, 1, 1, 1]}


def split(name: str) -> tuple[str, str]:
    head = "semantic_fpn" if name.startswith("semantic_fpn") else "upernet"
    return head, name.removeprefix(head + "_")


def test_the_twelve_segmenters_are_listed():
    names = model_names("segment")
    assert len(names) == 12
    assert {split(name)[0] for name in names} == {"semantic_fpn", "upernet"}


@pytest.mark.parametrize("name", model_names("segment"))
def test_parameter_count_is_the_lean_backbone_plus_the_official_heads(name):
    head, variant = split(name)
    model = twins.create_model(name, device="meta")
    heads = HEADS[head]["pcpvt" if variant.startswith("pcpvt") else variant]
    assert sum(p.numel() for p in model.parameters()) == LEAN_BACKBONE[variant] + heads
    assert model.arch == name and model.num_classes == 150


def test_aliases_and_model_args_rebuild_the_model():
    model = twins.create_model("upernet_alt_gvt_small", num_classes=7, device="meta", **TINY)
    assert model.arch == "upernet_svt_small"
    again = twins.create_model(model.arch, device="meta", **model.model_args)
    assert again.model_args == model.model_args
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in again.state_dict().items()} == shapes
    assert model.model_args["drop_path_rate"] == 0.2
    svt_large = twins.create_model("semantic_fpn_svt_large", device="meta")
    assert svt_large.model_args["drop_path_rate"] == 0.3  # the official SVT-L segmentation rate


def test_unknown_argument_is_one_clear_error():
    with pytest.raises(TwinsError, match="unknown argument.*channels"):
        twins.create_model("upernet_pcpvt_small", channels=3, device="meta")


@pytest.mark.parametrize(
    "name", ["semantic_fpn_pcpvt_small", "semantic_fpn_svt_base", "upernet_svt_small"]
)
def test_forward_gives_logits_at_the_input_size(name):
    torch.manual_seed(0)
    model = twins.create_model(name, num_classes=5, **TINY).eval()
    with torch.no_grad():
        result = model(torch.randn(2, 3, 37, 45))  # odd sizes: no stride divides them
    expected = {"out"} if name.startswith("semantic_fpn") else {"out", "aux"}
    assert set(result) == expected
    for logits in result.values():
        assert logits.shape == (2, 5, 37, 45)
        assert torch.isfinite(logits).all()


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    # PCPVT at 2 x 2 tokens in the last stage: a single token's query changes nothing (its
    # softmax over one key is 1), so its q projection would get no gradient.
    for name, size in (("semantic_fpn_svt_small", (40, 36)), ("upernet_pcpvt_small", (64, 72))):
        model = twins.create_model(name, num_classes=3, **TINY).train()
        result = model(torch.randn(2, 3, *size))
        sum(logits.square().mean() for logits in result.values()).backward()
        without = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert without == [], name


def test_svt_segmenter_gives_the_masked_classifier_maps_at_an_ade_size():
    """At 512x683 the stage-3 and stage-4 grids (32x42, 16x21) have one side a multiple of 7:
    the windows are padded on one side only and the padding masked (the official code loses the
    mask there). With its per-stage norms taken out (their place in the chain is
    tests/dense/test_dense_backbone_norms.py), the segmenter's backbone gives the classifier's
    stage maps."""
    torch.manual_seed(0)
    shallow = {"depths": [2, 2, 2, 2]}  # LSA and GSA in every stage
    classifier = twins.create_model("svt_small", **shallow).eval()
    model = twins.create_model("semantic_fpn_svt_small", **shallow).eval()
    own = model.backbone.state_dict()
    shared = {k: v for k, v in classifier.state_dict().items() if k in own}
    model.backbone.load_state_dict({**own, **shared})
    model.backbone.norm_list = torch.nn.ModuleList(torch.nn.Identity() for _ in range(4))
    images = torch.randn(1, 3, 512, 683)
    with torch.no_grad():
        maps = model.backbone(images)
        expected = classifier.forward_intermediates(images, intermediates_only=True)
    assert [tuple(m.shape[-2:]) for m in maps] == [(128, 170), (64, 85), (32, 42), (16, 21)]
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want)
