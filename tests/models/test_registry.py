"""The variant table, names, aliases and overrides."""

import re

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
    ("overrides", "argument", "message"),
    [
        ({"act_layer": "relu"}, "act_layer", "act_layer='relu' is unknown: use one of 'gelu'"),
        ({"depths": (1, 1, 1)}, "embed_dims", "embed_dims has 4 entries but depths has 3"),
        ({"depths": "abc"}, "depths", "depths='abc': give a list of positive block counts"),
        ({"depths": [1, 0, 1, 1]}, "depths", "depths=[1, 0, 1, 1]: give a list of positive"),
        ({"depths": 3}, "depths", "depths=3: give a list"),
        ({"embed_dims": "wide"}, "embed_dims", "embed_dims='wide': give a positive integer"),
        ({"mlp_ratios": [4, "x", 4, 4]}, "mlp_ratios", "give a positive number for every"),
        ({"embed_dims": (16, 32, 42, 64)}, "num_heads", "stage 2: embed_dims 42 is not divisible"),
        ({"drop_path_rate": 1.5}, "drop_path_rate", "drop_path_rate=1.5: give a probability"),
        ({"global_pool": "max"}, "global_pool", "global_pool='max' is unknown"),
        ({"in_chans": 0}, "in_chans", "in_chans=0: give an integer >= 1"),
    ],
)
def test_bad_overrides_name_the_argument(overrides, argument, message):
    with pytest.raises(TwinsError, match=re.escape(message)) as error:
        twins.create_model("pcpvt_small", **overrides)
    assert error.value.argument == argument
    assert str(error.value).startswith("cannot build pcpvt_small: ")


def test_timm_create_model_arguments():
    model = twins.create_model(
        "svt_small",
        num_classes=0,
        global_pool="",
        device="meta",
        dtype=torch.bfloat16,
        drop_rate=0.1,
        proj_drop_rate=0.2,
        img_size=(224, 224),
    )
    assert model.head.__class__ is torch.nn.Identity and model.global_pool == ""
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    block = model.blocks[0][0]
    assert block.attn.proj_drop.p == block.mlp.drop.p == 0.2
    assert model.pos_drops[0].p == model.head_drop.p == 0.1  # drop_rate where not overridden
    assert model(torch.empty(2, 3, 64, 64, device="meta", dtype=torch.bfloat16)).shape == (
        2,
        4,
        512,
    )
    assert model.pretrained_cfg["first_conv"] == "patch_embeds.0.proj"


def test_pretrained_weights_on_the_meta_device_are_refused():
    with pytest.raises(TwinsError, match="meta device holds no weights") as error:
        twins.create_model("pcpvt_small", pretrained="weights.pth", device="meta")
    assert error.value.argument == "device"


def test_num_classes_zero_gives_pooled_features():
    model = twins.create_model("pcpvt_small", num_classes=0, depths=(1, 1, 1, 1)).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_variant_table_matches_guide():
    assert VARIANTS["svt_base"]["embed_dims"] == (96, 192, 384, 768)
    assert VARIANTS["pcpvt_large"]["depths"] == (3, 8, 27, 3)
