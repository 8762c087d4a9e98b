"""Weights into models: one-line mismatch errors, shape inference, building the right model."""

import pytest
import torch

from seed_models import tiny_model
from twins.errors import TwinsError
from twins.weights import (
    StateDict,
    infer_model_args,
    load_into_model,
    mismatches,
    model_from_weights,
)


def test_mismatch_names_the_first_keys_and_shapes():
    pcpvt = tiny_model("pcpvt")
    svt_weights = tiny_model("svt").state_dict()
    problem = mismatches(pcpvt, svt_weights)
    assert problem.startswith("missing blocks.0.0.attn.q.weight")
    assert "unexpected blocks.0.0.attn.qkv.weight" in problem
    assert (
        "shape patch_embeds.2.proj.weight (64, 32, 2, 2) in file vs (40, 32, 2, 2) in model"
        in problem
    )
    with pytest.raises(TwinsError) as error:
        load_into_model(pcpvt, svt_weights)
    assert "\n" not in str(error.value) and "weights do not fit pcpvt_small" in str(error.value)
    assert mismatches(pcpvt, pcpvt.state_dict()) is None


def test_a_head_of_another_class_count_can_be_dropped():
    source = tiny_model("pcpvt", num_classes=10).state_dict()
    target = tiny_model("pcpvt", num_classes=3)
    head = target.head.weight.clone()
    with pytest.raises(TwinsError, match="shape head.weight"):
        load_into_model(target, source)
    load_into_model(target, source, drop_mismatched_head=True)
    assert torch.equal(target.head.weight, head)
    assert torch.equal(target.norm.weight, source["norm.weight"])


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_shapes_are_inferred_from_the_weights(family):
    model = tiny_model(family, num_classes=7, mlp_ratios=(2, 4, 4, 3))
    inferred = infer_model_args(model.state_dict())
    for key, value in inferred.items():
        assert value == model.model_args[key], key


def test_model_is_built_from_metadata_or_arch():
    model = tiny_model("svt", act_layer="gelu_tanh")
    bare = StateDict(model.state_dict(), {"act_layer": "gelu_tanh"})
    with pytest.raises(TwinsError, match="pass --arch"):
        model_from_weights(bare)
    rebuilt = model_from_weights(bare, "alt_gvt_small")
    assert rebuilt.model_args == model.model_args and not rebuilt.training

    described = StateDict(model.state_dict(), {"arch": "svt_small", "model_args": model.model_args})
    assert model_from_weights(described).model_args == model.model_args
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), model_from_weights(described)(images))

    with pytest.raises(TwinsError, match="do not fit pcpvt_small"):
        model_from_weights(bare, "pcpvt_small")
