"""Weights into models: one-line mismatch errors naming names, shapes and dtypes; integer,
boolean and non-finite weights refused."""

import math

import pytest
import torch

from seed_models import tiny_model
from twins.errors import TwinsError
from twins.weights import check_values, load_into_model, mismatches


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


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.uint8])
def test_integer_and_boolean_tensors_are_not_cast_into_float_parameters(dtype):
    model = tiny_model("pcpvt")
    weights = model.state_dict()
    weights["blocks.0.0.attn.q.weight"] = weights["blocks.0.0.attn.q.weight"].to(dtype)
    problem = mismatches(model, weights)
    assert problem == f"dtype blocks.0.0.attn.q.weight {dtype} in file vs torch.float32 in model"
    with pytest.raises(TwinsError, match="dtype blocks.0.0.attn.q.weight"):
        load_into_model(tiny_model("pcpvt"), weights)
    with pytest.raises(TwinsError, match=r"not floating point: blocks.0.0.attn.q.weight"):
        check_values(weights)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused(value):
    weights = tiny_model("pcpvt").state_dict()
    weights["norm.weight"][3] = value
    model = tiny_model("pcpvt")
    before = model.norm.weight.clone()
    with pytest.raises(TwinsError, match=r"NaN or infinite values in norm.weight") as error:
        load_into_model(model, weights)
    assert "\n" not in str(error.value)
    assert torch.equal(model.norm.weight, before)  # nothing was loaded
    half = {name: tensor.half() for name, tensor in tiny_model("pcpvt").state_dict().items()}
    check_values(half)  # another float dtype is fine: it is cast to the model's
