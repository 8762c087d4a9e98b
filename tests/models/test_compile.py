"""What the README says of `torch.compile` at several input sizes: under `torch.inference_mode`
(or `no_grad`) a compiled model serves a second size (recompiled with dynamic shapes) and
matches eager PyTorch. With gradients enabled, torch 2.14.1's Inductor fails on the second size
(timm's Twins too); `dynamic=False` (one compile per size) is the workaround there. Compiling
takes 2-6 minutes per test on a 2-core CPU (about 30 s with Inductor's cache warm), hence slow."""

import pytest
import torch

import twins


@pytest.mark.slow
def test_compiled_model_serves_a_second_size_under_inference_mode():
    # SVT: its windows and their padding are the size-dependent part.
    torch.manual_seed(0)
    widths = (16, 32, 64, 128)
    model = twins.create_model("svt_small", num_classes=10, embed_dims=widths, depths=(2,) * 4)
    model.eval()
    compiled = torch.compile(model)
    for size in ((64, 64), (96, 80)):  # the second: SVT's windows need padding
        images = torch.randn(2, 3, *size)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(images), model(images), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_without_dynamic_shapes_trains_at_a_second_size():
    # The README's workaround for gradients at several sizes: one compile per size.
    torch.manual_seed(0)
    widths = (16, 32, 64, 128)
    model = twins.create_model("svt_small", num_classes=10, embed_dims=widths, depths=(2,) * 4)
    compiled = torch.compile(model.eval(), dynamic=False)
    for size in ((64, 64), (96, 80)):
        images = torch.randn(2, 3, *size)
        logits = compiled(images)
        assert logits.requires_grad
        with torch.no_grad():
            torch.testing.assert_close(logits.detach(), model(images), rtol=1e-4, atol=1e-5)
