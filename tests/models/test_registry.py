"""The variant table, names, aliases and overrides."""

import pytest
import torch

import twins
from twins.errors import TwinsError
from twins.models import ALIASES, VARIANTS, count_macs

# Official parameter counts at 1000 classes (GUIDE §4) and the paper's multiply-adds at 224.
OFFICIAL_PARAMS = {
    "pcpvt_small": 24_106_216,
    "pcpvt_base": 43_828_456,
    "pcpvt_large": 60_989_672,
    "svt_small": 24_060_776,
    "svt_base": 56_070_952,
    "svt_large": 99_271_400,
}
PAPER_GMACS = {
    "pcpvt_small": 3.8,
    "pcpvt_base": 6.7,
    "pcpvt_large": 9.8,
    "svt_small": 2.9,
    "svt_base": 8.6,
    "svt_large": 15.1,
}


def test_list_models_is_the_table():
    assert twins.list_models() == list(OFFICIAL_PARAMS)
    assert twins.list_models("svt_*") == ["svt_small", "svt_base", "svt_large"]


@pytest.mark.parametrize("name", twins.list_models())
def test_parameter_count_and_macs(name):
    with torch.device("meta"):
        model = twins.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    assert count_macs(model, 224) / 1e9 == pytest.approx(PAPER_GMACS[name], abs=0.06)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_build_their_variant(alias):
    with torch.device("meta"):
        model = twins.create_model(alias)
    assert model.arch == ALIASES[alias]


def test_rebuild_from_model_args():
    model = twins.create_model("svt_small", num_classes=7, depths=(2, 2, 2, 2), wss=5)
    again = twins.create_model(model.arch, **model.model_args)
    assert again.model_args == model.model_args
    assert again.state_dict().keys() == model.state_dict().keys()


def test_unknown_name_suggests_close_match():
    with pytest.raises(TwinsError, match="did you mean pcpvt_small"):
        twins.create_model("pcpvt_smal")


def test_unknown_override_lists_valid_ones():
    with pytest.raises(TwinsError, match="embed_dim.*valid ones are embed_dims"):
        twins.create_model("pcpvt_small", embed_dim=64)


@pytest.mark.parametrize(
    "overrides",
    [{"act_layer": "relu"}, {"depths": (1, 1, 1)}, {"embed_dims": (16, 32, 42, 64)}],
)
def test_bad_overrides_are_refused(overrides):
    with pytest.raises(TwinsError):
        twins.create_model("pcpvt_small", **overrides)


def test_num_classes_zero_gives_pooled_features():
    model = twins.create_model("pcpvt_small", num_classes=0, depths=(1, 1, 1, 1)).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_variant_table_matches_guide():
    assert VARIANTS["svt_base"]["embed_dims"] == (96, 192, 384, 768)
    assert VARIANTS["pcpvt_large"]["depths"] == (3, 8, 27, 3)
