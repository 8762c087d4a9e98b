"""The seed's MindSpore names <-> the official layout, and the seed's logits in PyTorch."""

import numpy as np
import pytest
import torch

import twins
from seed_models import SEED_MODELS, tiny_model
from twins.errors import TwinsError
from twins.weights import load_weights, save_weights
from twins.weights.mindspore_layout import family_of, from_mindspore, to_mindspore
from twins.weights.mindspore_proto import read_tags


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_official_to_mindspore_and_back_is_lossless(family):
    state_dict = tiny_model(family).state_dict()
    tags = to_mindspore(state_dict)
    assert all(tag.startswith("model.") for tag in tags)
    assert "model.norm.gamma" in tags and "model.blocks.0.0.norm1.beta" in tags
    assert "model.blocks.0.1.attn.k.weight" in tags and "model.blocks.0.1.attn.v.bias" in tags
    assert not any(tag.endswith((".qkv.weight", ".kv.weight")) for tag in tags)
    back = from_mindspore(tags)
    assert set(back) == set(state_dict)
    for name, tensor in state_dict.items():
        assert torch.equal(back[name], tensor), name


def test_family_comes_from_spatial_reduction_placement():
    pcpvt = set(tiny_model("pcpvt").state_dict())
    svt = set(tiny_model("svt").state_dict())
    assert (family_of(pcpvt), family_of(svt)) == ("pcpvt", "svt")
    no_reduction = tiny_model("svt", sr_ratios=1).state_dict()
    assert family_of(set(no_reduction)) is None
    with pytest.raises(TwinsError, match="pass arch"):
        from_mindspore(to_mindspore(no_reduction))
    back = from_mindspore(to_mindspore(no_reduction), family="svt")
    assert torch.equal(
        back["blocks.0.0.attn.qkv.weight"], no_reduction["blocks.0.0.attn.qkv.weight"]
    )


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_seed_checkpoint_gives_the_seed_logits(seed_fixtures, family):
    arch, shape = SEED_MODELS[family]
    checkpoint = seed_fixtures / f"seed_{family}_train.ckpt"
    weights = load_weights(checkpoint)
    assert weights.metadata == {"format": "mindspore", "act_layer": "gelu_tanh", "num_classes": 10}
    model = twins.create_model(arch, pretrained=checkpoint, num_classes=10, **shape).eval()
    assert model.model_args["act_layer"] == "gelu_tanh"
    images = torch.from_numpy(np.load(seed_fixtures / f"seed_{family}_input.npy"))
    expected = np.load(seed_fixtures / f"seed_{family}_logits.npy")
    with torch.no_grad():
        logits = model(images).numpy()
    assert np.abs(logits - expected).max() / np.abs(expected).max() <= 1e-5


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_written_ckpt_matches_the_seed_names_and_tensors(seed_fixtures, family, tmp_path):
    checkpoint = seed_fixtures / f"seed_{family}_train.ckpt"
    seed = {k: v for k, v in read_tags(checkpoint).items() if k.startswith("model.")}
    written = tmp_path / "again.ckpt"
    save_weights(load_weights(checkpoint), written)
    again = read_tags(written)
    assert set(again) == set(seed)
    for tag, tensor in seed.items():
        assert torch.equal(again[tag], tensor), tag
