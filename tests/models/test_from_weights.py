"""A model built from weights: shape inference, metadata or arch, model_args for what shapes
cannot tell, and weights checked on the meta device before anything large is built."""

import pytest
import torch

import twins
import twins.models.from_weights as from_weights
from seed_models import tiny_model
from twins.errors import TwinsError
from twins.models.from_weights import infer_model_args, model_arguments, model_from_weights
from twins.weights import StateDict, load_weights
from twins.weights.mindspore_layout import to_mindspore
from twins.weights.mindspore_proto import write_tags

# The demo's widths: pcpvt_small's heads (1, 2, 5, 8) do not divide them.
DEMO_ARGS = {"embed_dims": [32, 64, 128, 256], "num_heads": [1, 2, 4, 8], "depths": [1, 1, 1, 1]}


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_shapes_are_inferred_from_the_weights(family):
    model = tiny_model(family, num_classes=7, mlp_ratios=(2, 4, 4, 3))
    inferred = infer_model_args(model.state_dict())
    for key, value in inferred.items():
        assert value == model.model_args[key], key


def test_model_is_built_from_metadata_or_arch():
    model = tiny_model("svt", act_layer="gelu_tanh")
    bare = StateDict(model.state_dict(), {"act_layer": "gelu_tanh"})
    with pytest.raises(TwinsError, match="pass arch") as error:
        model_from_weights(bare)
    assert error.value.argument == "arch" and "--" not in str(error.value)
    rebuilt = model_from_weights(bare, "alt_gvt_small")
    assert rebuilt.model_args == model.model_args and not rebuilt.training

    described = StateDict(model.state_dict(), {"arch": "svt_small", "model_args": model.model_args})
    assert model_from_weights(described).model_args == model.model_args
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), model_from_weights(described)(images))

    with pytest.raises(TwinsError, match="do not fit pcpvt_small"):
        model_from_weights(bare, "pcpvt_small")


def test_heads_the_weights_cannot_tell_come_from_model_args():
    model = twins.create_model("pcpvt_small", num_classes=10, **DEMO_ARGS)
    bare = StateDict(model.state_dict(), {"arch": "pcpvt_small"})
    with pytest.raises(TwinsError) as error:
        model_from_weights(bare)
    message = str(error.value)
    assert "num_heads [1, 2, 5, 8]" in message and "model_args={'num_heads': [...]}" in message
    assert error.value.argument == "model_args" and "\n" not in message
    rebuilt = model_from_weights(bare, model_args={"num_heads": [1, 2, 4, 8]})
    assert rebuilt.model_args == model.model_args
    # A file that describes its model needs no model_args.
    described = StateDict(bare, {"arch": "pcpvt_small", "model_args": model.model_args})
    assert model_arguments(described) == ("pcpvt_small", model.model_args)


def test_two_stage_weights_without_metadata_ask_for_the_per_stage_arguments():
    model = twins.create_model(
        "svt_small", embed_dims=(16, 32), num_heads=(2, 4), depths=(2, 2), wss=(7, 7),
        mlp_ratios=(4, 4), sr_ratios=(8, 4),
    )  # fmt: skip
    with pytest.raises(TwinsError, match="num_heads"):
        model_from_weights(StateDict(model.state_dict()), "svt_small")
    with pytest.raises(TwinsError, match="wss"):
        model_from_weights(
            StateDict(model.state_dict()), "svt_small", model_args={"num_heads": [2, 4]}
        )
    rebuilt = model_from_weights(
        StateDict(model.state_dict()), "svt_small", model_args={"num_heads": [2, 4], "wss": [7, 7]}
    )
    assert rebuilt.model_args == model.model_args


def test_a_small_file_implying_a_huge_model_is_refused_before_building_it(tmp_path, monkeypatch):
    """Zero-element tensors whose shapes say patch_size 1500: the model would hold a
    64 x 3 x 1500 x 1500 kernel (1.7 GB); nothing but the meta-device skeleton is built."""
    weights = twins.create_model("pcpvt_small", num_classes=10).state_dict()
    for name, tensor in weights.items():  # keep the sizes shapes are inferred from, empty the rest
        if tensor.dim() == 4:
            weights[name] = torch.zeros(*tensor.shape[:2], 0, tensor.shape[3])
        elif tensor.dim() == 2:
            weights[name] = torch.zeros(tensor.shape[0], 0)
    weights["patch_embeds.0.proj.weight"] = torch.zeros(64, 3, 0, 1500)
    path = tmp_path / "tiny.ckpt"
    write_tags(to_mindspore(weights), path)
    assert path.stat().st_size < 400_000  # the norms and biases

    built_on = []
    create_model = from_weights.create_model

    def watched(name, **kwargs):
        device = torch.empty(()).device
        built_on.append(device.type)
        if device.type != "meta":
            raise AssertionError("a real model was built from a file that does not fit it")
        return create_model(name, **kwargs)

    monkeypatch.setattr(from_weights, "create_model", watched)
    with pytest.raises(TwinsError, match=r"do not fit pcpvt_small: .*shape") as error:
        model_from_weights(load_weights(path), "pcpvt_small")
    assert built_on == ["meta"] and "\n" not in str(error.value)
