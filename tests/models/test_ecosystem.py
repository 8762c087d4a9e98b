"""The tools people point at timm backbones, on tiny models of both families: TorchScript
(scripted and traced), torchvision's fx feature extraction, dynamic quantization, torch.func gradients, deepcopy and
pickle. Each result is compared with eager PyTorch where the comparison means something. The
fused CPU kernels serve every shape here (as they serve full-size models), so each tool meets
the fast path and must find it stepping aside."""

import copy
import io

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

# 100 x 75: SVT's windows need padding at every stage, on both sides.
IMAGES = torch.randn(2, 3, 100, 75)


@pytest.fixture(params=["pcpvt_small", "svt_small"])
def model(request, small_model, fused_everywhere):
    torch.manual_seed(0)
    return small_model(request.param, num_classes=10).eval()


def _close(result, expected, rtol=1e-4, atol=1e-5):
    """Fused kernels (eager) against the plain layers (the tools): equal to float rounding."""
    torch.testing.assert_close(result, expected, rtol=rtol, atol=atol)


def test_torchscript_matches_eager(model):
    scripted = torch.jit.script(model)
    for images in (IMAGES, torch.randn(1, 3, 112, 112)):  # padded windows, and none
        with torch.no_grad():
            _close(scripted(images), model(images))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    with torch.no_grad():
        _close(torch.jit.load(buffer)(IMAGES), model(IMAGES))


def test_jit_trace_serves_other_sizes(model):
    # Traced where the windows divide the map, run where they need padding and masking.
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(2, 3, 112, 112))
        _close(traced(IMAGES), model(IMAGES))


def test_torchvision_feature_extractor_matches_eager(model):
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == eval_nodes and {"norm", "head"} <= set(eval_nodes)
    extractor = create_feature_extractor(model, {"norm": "features", "head": "logits"})
    with torch.no_grad():
        outputs = extractor(IMAGES)
        _close(outputs["features"], model.forward_features(IMAGES))
        _close(outputs["logits"], model(IMAGES))


def test_fx_graph_trains_like_eager(model):
    model.train()
    extractor = create_feature_extractor(model, {"head": "logits"})
    extractor(IMAGES)["logits"].square().mean().backward()
    fx_grads = {name: p.grad.clone() for name, p in extractor.named_parameters()}
    model.zero_grad()
    model(IMAGES).square().mean().backward()
    assert fx_grads.keys() == dict(model.named_parameters()).keys()
    for name, parameter in model.named_parameters():
        _close(fx_grads[name], parameter.grad, rtol=1e-4, atol=1e-7)


def test_dynamic_quantization_runs_close_to_float(model):
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear})
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    with torch.no_grad():
        expected, result = model(IMAGES), quantized(IMAGES)
    assert (result - expected).abs().max() <= 0.05 * expected.abs().max()


def test_torch_func_gradients_equal_autograd(model):
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p):
        return torch.func.functional_call(model, p, (IMAGES,)).square().mean()

    grads = torch.func.grad(loss)(params)
    model(IMAGES).square().mean().backward()
    for name, parameter in model.named_parameters():
        _close(grads[name], parameter.grad, rtol=1e-4, atol=1e-7)


def test_deepcopy_and_pickle_keep_the_function(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        expected = model(IMAGES)
        _close(copy.deepcopy(model)(IMAGES), expected, rtol=0, atol=0)
        _close(restored(IMAGES), expected, rtol=0, atol=0)
