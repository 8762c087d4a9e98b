"""Our six models in timm's registry, held to the contracts of timm's own model tests
(`tests/test_models.py` of pytorch-image-models, run there on every timm model): forward,
backward, default config, TorchScript, fx forward and backward, fx then TorchScript,
`forward_intermediates`, `features_only` through timm's FeatureGetterNet; and layer-wise
learning-rate decay groups equal to those of timm's own Twins.

The entries are registered as timm registers its Twins: an entrypoint that builds through
`timm.models.build_model_with_cfg` with timm's Twins pretrained config and feature config, so
`timm.create_model` hands ours exactly the arguments it hands timm's. The fast suite runs every
variant with shallow stages at 96 x 96; the slow one runs the full models at timm's 224 x 224,
and timm's own Twins beside them (every check here holds for timm's Twins too).
"""

import functools
import math

import pytest
import timm
import torch
from timm.models import (
    FeatureInfo,
    build_model_with_cfg,
    get_notrace_functions,
    get_notrace_modules,
    get_pretrained_cfg,
    register_model,
    register_notrace_module,
)
from timm.optim import param_groups_layer_decay
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import twins
from twins.models.block import Block

# timm's tracer keeps our blocks whole, as timm's twins.py keeps its attention modules whole:
# the traced graph then runs each block as eager PyTorch does (through the CPU fast path where
# it applies), so traced and eager outputs agree bit for bit, which timm's fx test asks. (The
# blocks trace through as well; tests/models/test_ecosystem.py traces them with no leaf modules.)
register_notrace_module(Block)

NAMES = twins.list_models()
TINY_INPUT = (3, 96, 96)


def _tiny_depths(name: str) -> tuple[int, ...]:
    return (2, 2, 2, 2) if name.startswith("svt") else (1, 1, 1, 1)


# Pretrained configs of the entries below, where timm's `register_model` looks for them.
default_cfgs = {}


def _register(name: str, tiny: bool) -> str:
    entry = f"ours_{name}_tiny" if tiny else f"ours_{name}"
    default_cfgs[entry] = get_pretrained_cfg(f"twins_{name}").to_dict()
    overrides = {}
    if tiny:
        default_cfgs[entry].update(input_size=TINY_INPUT, fixed_input_size=False)
        overrides["depths"] = _tiny_depths(name)

    def entrypoint(pretrained=False, **kwargs):
        return build_model_with_cfg(
            functools.partial(twins.create_model, name, **overrides),
            entry,
            pretrained,
            feature_cfg={"out_indices": 4, "feature_cls": "getter"},
            **kwargs,
        )

    entrypoint.__name__ = entry
    register_model(entrypoint)
    return entry


TINY = [_register(name, tiny=True) for name in NAMES]
FULL = [_register(name, tiny=False) for name in NAMES]
TIMM_OWN = ["twins_pcpvt_small", "twins_svt_small"]
MODELS = [
    *TINY,
    *(pytest.param(name, marks=pytest.mark.slow) for name in FULL),
    *(pytest.param(name, marks=pytest.mark.slow) for name in TIMM_OWN),
]

# timm's test sizes: the default input, capped at these sides unless the config fixes it.
FORWARD, BACKWARD, SCRIPT, FEATURES, FX = 384, 128, 128, 96, 128


def _input_size(model_name: str, target: int) -> tuple[int, int, int]:
    cfg = get_pretrained_cfg(model_name)
    if cfg.fixed_input_size:
        return cfg.input_size
    return tuple(min(side, target) for side in cfg.input_size)


def _check_maps(maps, feature_info: FeatureInfo, input_size, batch: int) -> None:
    channels, reductions = feature_info.channels(), feature_info.reduction()
    assert len(maps) == len(channels) >= 3
    for channel, reduction, output in zip(channels, reductions, maps, strict=True):
        assert output.shape[0] == batch and output.shape[1] == channel
        assert output.shape[2] <= math.ceil(input_size[1] / reduction) + 1
        assert output.shape[3] <= math.ceil(input_size[2] / reduction) + 1
        assert not output.isnan().any()


@pytest.mark.parametrize("model_name", MODELS)
def test_forward(model_name):
    model = timm.create_model(model_name).eval()
    inputs = torch.randn(1, *_input_size(model_name, FORWARD))
    outputs = model(inputs)
    assert outputs.shape[0] == 1 and not outputs.isnan().any()
    try:
        model.set_grad_checkpointing()
    except Exception:  # timm's own Twins refuses it; timm's test accepts that
        return
    torch.testing.assert_close(model(inputs), outputs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
def test_backward(model_name):
    model = timm.create_model(model_name, num_classes=42).train()
    outputs = model(torch.randn(2, *_input_size(model_name, BACKWARD)))
    outputs.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert outputs.shape[-1] == 42 and not outputs.isnan().any()


@pytest.mark.parametrize("model_name", MODELS)
def test_default_cfg(model_name):
    # timm's contract for transformer-like models (test_model_default_cfgs_non_std).
    model = timm.create_model(model_name).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg = model.default_cfg
    inputs = torch.randn(1, *_input_size(model_name, 320))
    features = model.forward_features(inputs)
    pre_logits = model.forward_head(features, pre_logits=True)
    assert features.shape[-1] == model.num_features
    assert pre_logits.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    pooled = model(inputs)
    assert pooled.shape == pre_logits.shape == (1, model.head_hidden_size)
    headless = timm.create_model(model_name, num_classes=0).eval()
    assert headless(inputs).shape[-1] == model.num_features
    state_dict = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state_dict
    assert f"{cfg['classifier']}.weight" in timm.create_model(model_name).state_dict()


@pytest.mark.parametrize("model_name", MODELS)
def test_torchscript(model_name):
    with timm.set_scriptable(True):
        model = timm.create_model(model_name).eval()
    scripted = torch.jit.script(model)
    inputs = torch.randn(1, *_input_size(model_name, SCRIPT))
    outputs = scripted(inputs)
    assert outputs.shape[0] == 1 and not outputs.isnan().any()
    with torch.no_grad():
        torch.testing.assert_close(outputs, model(inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
def test_features_only(model_name):
    model = timm.create_model(model_name, features_only=True).eval()
    input_size = _input_size(model_name, FEATURES)
    with torch.no_grad():
        maps = model(torch.randn(1, *input_size))
    _check_maps(maps, model.feature_info, input_size, batch=1)
    assert all(m.is_contiguous() for m in maps)


@pytest.mark.parametrize("model_name", MODELS)
def test_forward_intermediates(model_name):
    model = timm.create_model(model_name).eval()
    feature_info = FeatureInfo(model.feature_info, len(model.feature_info))
    input_size = _input_size(model_name, FEATURES)
    inputs = torch.randn(1, *input_size)
    output, intermediates = model.forward_intermediates(inputs, output_fmt="NCHW")
    _check_maps(intermediates, feature_info, input_size, batch=1)
    assert torch.allclose(output, model.forward_features(inputs))
    try:
        model.set_grad_checkpointing()
    except Exception:  # timm's own Twins refuses it
        return
    again, _ = model.forward_intermediates(inputs, output_fmt="NCHW")
    torch.testing.assert_close(again, output, rtol=1e-4, atol=1e-5)


def _fx_model(model, train=False):
    """timm's way of tracing a model for its fx tests: its leaf modules and wrapped functions,
    the graph's last node returned."""
    tracer_kwargs = {
        "leaf_modules": get_notrace_modules(),
        "autowrap_functions": get_notrace_functions(),
        "param_shapes_constant": True,
    }
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(
        model,
        train_return_nodes=[train_nodes[-1]],
        eval_return_nodes=[eval_nodes[-1]],
        tracer_kwargs=tracer_kwargs,
    ).train(train)


@pytest.mark.parametrize("model_name", MODELS)
def test_fx_forward(model_name):
    model = timm.create_model(model_name).eval()
    inputs = torch.randn(1, *_input_size(model_name, FX))
    with torch.inference_mode():
        outputs = model(inputs)
        (fx_outputs,) = _fx_model(model)(inputs).values()
    assert torch.equal(fx_outputs, outputs)


@pytest.mark.parametrize("model_name", MODELS)
def test_fx_backward(model_name):
    model = timm.create_model(model_name, num_classes=42).train()
    fx_model = _fx_model(model, train=True)
    (outputs,) = fx_model(torch.randn(2, *_input_size(model_name, FX))).values()
    outputs.mean().backward()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert missing == [] and outputs.shape[-1] == 42 and not outputs.isnan().any()


@pytest.mark.parametrize("model_name", MODELS)
def test_fx_then_torchscript(model_name):
    with timm.set_scriptable(True):
        model = timm.create_model(model_name).eval()
    scripted = torch.jit.script(_fx_model(model))
    with torch.inference_mode():
        (outputs,) = scripted(torch.randn(1, *_input_size(model_name, SCRIPT))).values()
    assert outputs.shape[0] == 1 and not outputs.isnan().any()


def _layer_decay_groups(model) -> list:
    """(lr scale, weight decay, parameter names) of timm's layer-decay groups of `model`."""
    names = {id(p): name for name, p in model.named_parameters()}
    groups = param_groups_layer_decay(
        model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(), layer_decay=0.75
    )
    return sorted(
        (g["lr_scale"], g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
        for g in groups
    )


@pytest.mark.parametrize("name", NAMES)
def test_layer_decay_groups_equal_timms(name):
    ours = twins.create_model(name, device="meta")
    reference = timm.create_model(f"twins_{name}", device="meta")
    groups = _layer_decay_groups(ours)
    assert groups == _layer_decay_groups(reference)
    assert len({scale for scale, _, _ in groups}) == sum(ours.depths) + 2  # stem .. blocks, norm
