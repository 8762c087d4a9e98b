"""When a block runs through the fused CPU kernels (`twins.models.fast_path`), where it steps
aside for the plain layers, and the switch that turns it off."""

import copy

import pytest
import torch
from torch import nn

import twins
from twins.errors import TwinsError
from twins.models import fast_path, fused

pytestmark = pytest.mark.skipif(not fused._ONEDNN_AVAILABLE, reason="needs oneDNN (CPU)")


@pytest.fixture
def fast_blocks(monkeypatch):
    """The blocks that ran through the fast path, in order."""
    taken = []
    block_forward = fast_path.block_forward

    def spy(block, x, size):
        taken.append(block)
        return block_forward(block, x, size)

    monkeypatch.setattr(fast_path, "block_forward", spy)
    return taken


def _blocks(model):
    return sum(len(stage) for stage in model.blocks)


def _tiny(name="svt_small", **overrides):
    torch.manual_seed(0)
    depths = (2, 2, 2, 2) if name.startswith("svt") else (1, 1, 1, 1)
    return twins.create_model(name, num_classes=4, depths=depths, **overrides)


IMAGES = torch.randn(2, 3, 64, 72)


@pytest.mark.parametrize("name", ["pcpvt_small", "svt_small"])
def test_every_block_takes_it_by_default(name, fast_blocks):
    model = _tiny(name).eval()
    with torch.no_grad():
        model(IMAGES)
    assert len(fast_blocks) == _blocks(model)


def test_switched_off_by_argument_method_or_environment(fast_blocks, monkeypatch):
    with torch.no_grad():
        _tiny(fast_path=False).eval()(IMAGES)
        model = _tiny().eval()
        model.set_fast_path(False)
        model(IMAGES)
        monkeypatch.setenv("TWINS_FAST_PATH", "0")
        _tiny().eval()(IMAGES)
        assert fast_blocks == []
        _tiny(fast_path=True).eval()(IMAGES)  # the argument wins over the environment
    assert fast_blocks


def test_unknown_environment_setting_is_refused(monkeypatch):
    monkeypatch.setenv("TWINS_FAST_PATH", "maybe")
    with pytest.raises(TwinsError, match="TWINS_FAST_PATH='maybe'") as error:
        _tiny()
    assert error.value.argument == "fast_path"


def test_dropout_turns_it_off_in_training_only(fast_blocks):
    model = _tiny(proj_drop_rate=0.1)
    model(IMAGES)
    assert fast_blocks == []
    with torch.no_grad():
        model.eval()(IMAGES)
    assert len(fast_blocks) == _blocks(model)


def test_stochastic_depth_keeps_it(fast_blocks):
    model = _tiny(drop_path_rate=0.3).train()
    torch.manual_seed(1)
    model(IMAGES).sum().backward()
    assert len(fast_blocks) == _blocks(model)


@pytest.mark.parametrize(
    "context",
    ["autocast", "jit_trace", "fx_trace", "func_grad", "quantized", "float64"],
)
def test_steps_aside(context, fast_blocks):
    model = _tiny().eval()
    if context == "autocast":
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(IMAGES)
    elif context == "jit_trace":
        with torch.no_grad():
            torch.jit.trace(model, IMAGES, check_trace=False)  # (its check runs eagerly)
    elif context == "fx_trace":
        torch.fx.symbolic_trace(model)
    elif context == "func_grad":
        params = {name: p.detach() for name, p in model.named_parameters()}
        torch.func.grad(lambda p: torch.func.functional_call(model, p, (IMAGES,)).sum())(params)
    elif context == "quantized":
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear})
        with torch.no_grad():
            quantized(IMAGES)
    else:
        with torch.no_grad():
            model.double()(IMAGES.double())
    assert fast_blocks == []
