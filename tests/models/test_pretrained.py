"""`create_model(pretrained=...)`: a file, the hub, a head of another size, a wrong file."""

import pytest
import torch

import twins
from hub_cache import add_to_hub_cache
from twins.errors import TwinsError
from twins.weights import load_weights, save_weights

TINY = {"embed_dims": (16, 32, 40, 64), "depths": (1, 1, 1, 1)}


@pytest.fixture
def weights_file(tmp_path):
    torch.manual_seed(0)
    source = twins.create_model("pcpvt_small", **TINY)
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    return source, path


def test_pretrained_file_loads_every_tensor(weights_file):
    source, path = weights_file
    model = twins.create_model("twins_pcpvt_small", pretrained=path, **TINY)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_pretrained_head_of_another_size_is_left_fresh(weights_file):
    source, path = weights_file
    model = twins.create_model("pcpvt_small", pretrained=path, num_classes=7, **TINY)
    assert model.head.weight.shape == (7, 64)
    torch.testing.assert_close(model.norm.weight, source.norm.weight)


def test_pretrained_of_another_shape_names_the_keys(weights_file):
    _, path = weights_file
    with pytest.raises(TwinsError, match="shape patch_embeds.0.proj.weight"):
        twins.create_model("pcpvt_small", pretrained=path, depths=(1, 1, 1, 1))


def test_pretrained_true_is_the_variants_hub_weights(weights_file, offline_hub_cache):
    """timm's `timm/twins_<variant>.in1k`, for a classifier and a dense model's backbone."""
    model, path = weights_file
    save_weights(load_weights(path), path.with_suffix(".safetensors"))
    data = path.with_suffix(".safetensors").read_bytes()
    add_to_hub_cache(offline_hub_cache, "timm/twins_pcpvt_small.in1k", {"model.safetensors": data})
    built = twins.create_model("pcpvt_small_v0", pretrained=True, **TINY)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(built.state_dict()[name], tensor, rtol=0, atol=0)
    segmenter = twins.create_model(
        "semantic_fpn_pcpvt_small", pretrained=True, num_classes=2, num_heads=[1, 2, 5, 8], **TINY
    )
    trunk = segmenter.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("blocks."):
            torch.testing.assert_close(trunk[f"backbone.{name}"], tensor, rtol=0, atol=0)


def test_pretrained_cfg_takes_the_preprocessing_the_weights_carry(tmp_path):
    """timm's data helpers then prepare images as the weights were trained for."""
    import timm.data

    from twins.weights import StateDict, model_metadata, save_weights

    source = twins.create_model("pcpvt_small", num_classes=4, **TINY)
    preprocessing = {"image_size": 32, "crop_pct": 1.0, "crop_mode": "squash"}
    preprocessing |= {"interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}
    path = tmp_path / "digits.safetensors"
    save_weights(StateDict(source.state_dict(), model_metadata(source, None, preprocessing)), path)
    model = twins.create_model("pcpvt_small", pretrained=path, num_classes=4, **TINY)
    config = timm.data.resolve_data_config(model=model)
    assert config["input_size"] == (3, 32, 32) and config["crop_pct"] == 1.0
    assert config["crop_mode"] == "squash" and config["interpolation"] == "bilinear"
    assert config["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["num_classes"] == 4
    # Without weights: timm's configuration of its published Twins weights.
    assert twins.create_model("pcpvt_small", **TINY).pretrained_cfg["crop_pct"] == 0.9
