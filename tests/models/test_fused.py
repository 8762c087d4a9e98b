"""The fused CPU kernels give the plain composition's outputs and gradients.

Thresholds are lowered so that the tiny shapes here take the fused paths, and the MLP chunk is
made small so that several chunks (the last one short) are run.
"""

import pytest
import torch
import torch.nn.functional as F

import twins
from twins.models import fused

pytestmark = pytest.mark.skipif(not fused._ONEDNN_AVAILABLE, reason="needs oneDNN (CPU)")

WIDTHS = {"pcpvt_small": (16, 32, 40, 64), "svt_small": (16, 32, 64, 128)}


def _run(model, images, train):
    model.zero_grad(set_to_none=True)
    if not train:
        with torch.no_grad():
            return model(images), {}
    logits = model(images)
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["pcpvt_small", "svt_small"])
@pytest.mark.parametrize("train", [False, True], ids=["infer", "train"])
def test_fused_model_equals_plain(name, train, small_model, fused_everywhere):
    torch.manual_seed(0)
    model = small_model(name, num_classes=10, embed_dims=WIDTHS[name]).train(train)
    images = torch.randn(2, 3, 64, 72)  # SVT: padded windows at every stage
    logits, grads = _run(model, images, train)
    model.set_fast_path(False)
    plain_logits, plain_grads = _run(model, images, train)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)
    for param_name, grad in plain_grads.items():
        torch.testing.assert_close(grads[param_name], grad, rtol=1e-4, atol=1e-6, msg=param_name)


def test_fused_functions_match_their_definitions(fused_everywhere):
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(24, 64), torch.nn.Linear(64, 24)
    x = torch.randn(3, 50, 24, requires_grad=True)
    residual = torch.randn(3, 50, 24, requires_grad=True)
    expected = residual + fc2(F.gelu(fc1(x), approximate="tanh"))
    with torch.no_grad():
        inference = fused.mlp(x, fc1, fc2, "tanh", residual)
        torch.testing.assert_close(inference, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            fused.linear(x, fc1.weight, fc1.bias), fc1(x), rtol=1e-5, atol=1e-6
        )
    training = fused.mlp(x, fc1, fc2, "tanh", residual)
    torch.testing.assert_close(training, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(training.sum(), (x, residual, fc1.weight, fc2.bias))
    expected_grads = torch.autograd.grad(expected.sum(), (x, residual, fc1.weight, fc2.bias))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_kernels_take_float32_and_bfloat16_cpu_tensors(fused_everywhere):
    x, weight = torch.randn(4, 30, 16), torch.randn(32, 16)
    assert fused.onednn_eligible(x, weight)
    # bfloat16 where this CPU's oneDNN has the kernel (AVX-512 BF16 or AMX), else F.linear
    bf16_supported = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert fused.onednn_eligible(x.bfloat16(), weight.bfloat16()) == bf16_supported
    assert not fused.onednn_eligible(x.double(), weight.double())
    assert not fused.onednn_eligible(x, weight.bfloat16())  # mixed: F.linear says why


def test_bfloat16_model_runs_fused(fused_everywhere, small_model):
    torch.manual_seed(0)
    model = small_model("svt_small", num_classes=10).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(images)
        low = model.to(torch.bfloat16)(images.bfloat16()).float()
    assert (low - reference).abs().max() <= 0.05 * reference.abs().max()


@pytest.mark.parametrize("train", [False, True], ids=["infer", "train"])
def test_whole_graph_capture(train, fused_everywhere):
    # fullgraph=True fails on any graph break. aot_eager traces forward and backward with fake
    # tensors (the custom ops' shape functions) without inductor's slow code generation; this
    # SVT has every layer kind of both families (LSA, GSA with and without reduction, PEG).
    torch.manual_seed(0)
    model = twins.create_model(
        "svt_small", num_classes=4, embed_dims=WIDTHS["svt_small"], depths=(2, 1, 1, 2)
    ).train(train)
    _assert_compiled_matches_eager(model, train, backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pcpvt_small", "svt_small"])
@pytest.mark.parametrize("train", [False, True], ids=["infer", "train"])
def test_inductor_compiled_model_matches_eager(name, train, small_model, fused_everywhere):
    torch.manual_seed(0)
    model = small_model(name, num_classes=10, embed_dims=WIDTHS[name]).train(train)
    _assert_compiled_matches_eager(model, train, backend="inductor")


def _assert_compiled_matches_eager(model, train, backend):
    images = torch.randn(2, 3, 64, 64)
    expected, expected_grads = _run(model, images, train)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(train):
        logits = compiled(images)
    if train:
        logits.square().mean().backward()
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-5, atol=1e-6)
    assert (len(expected_grads) > 0) == train
    parameters = dict(model.named_parameters())
    for param_name, grad in expected_grads.items():
        torch.testing.assert_close(
            parameters[param_name].grad, grad, rtol=1e-4, atol=1e-6, msg=param_name
        )
