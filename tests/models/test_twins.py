"""Every variant builds, runs at any input size, trains every parameter, and gives timm's
logits with timm's weights."""

import pytest
import timm
import torch

import twins

NAMES = twins.list_models()


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_finite_and_every_parameter_learns(name, small_model):
    torch.manual_seed(0)
    model = small_model(name, num_classes=10)
    images = torch.randn(2, 3, 64, 64)
    logits = model(images)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(250, 330), (32, 32), (97, 61)])
def test_any_input_size(name, size, small_model):
    model = small_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 64, 64), r"takes \(N, 3, H, W\) images, not .* \[3, 64, 64\]: add the batch axis"),
        ((1, 1, 64, 64), r"not a tensor of shape \[1, 1, 64, 64\]: give images with 3 channels"),
        ((1, 3, 31, 64), "at least 32 x 32 pixels, not 31 x 64: resize or pad them"),
        ((2, 3, 64, 16), "at least 32 x 32 pixels, not 64 x 16"),
    ],
)
def test_inputs_the_model_cannot_take_are_named(shape, message, small_model):
    model = small_model("svt_small").eval()
    for run in (model, model.forward_features, model.forward_intermediates):
        with pytest.raises(ValueError, match=message):
            run(torch.randn(shape))
    scripted = torch.jit.script(model)
    with pytest.raises(Exception, match=message):  # TorchScript re-raises as its own error
        scripted(torch.randn(shape))


@pytest.mark.parametrize(("name", "out_indices"), [("pcpvt_small", 4), ("svt_small", (1, 3))])
def test_features_only_is_timms_feature_extractor(name, out_indices):
    """The same maps, channels and reductions as timm's features_only Twins, same weights."""
    small = {"depths": (2, 2, 2, 2)}
    ours = twins.create_model(name, features_only=True, out_indices=out_indices, **small).eval()
    reference = timm.create_model(
        f"twins_{name}", features_only=True, out_indices=out_indices, **small
    ).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    assert ours.feature_info.channels() == reference.feature_info.channels()
    assert ours.feature_info.reduction() == reference.feature_info.reduction()
    assert "num_classes" not in ours.pretrained_cfg
    images = torch.randn(1, 3, 224, 224)  # timm pads windows without a mask: none padded here
    with torch.no_grad():
        maps, expected = ours(images), reference(images)
    assert len(maps) == len(expected) == (4 if out_indices == 4 else len(out_indices))
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _timm_pair(name: str):
    ours = twins.create_model(name).eval()
    reference = timm.create_model(f"twins_{name}").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", NAMES)
def test_timm_parity_at_224(name):
    torch.manual_seed(0)
    ours, reference = _timm_pair(name)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _relative_difference(ours(images), reference(images)) <= 1e-5


@pytest.mark.parametrize("name", ["pcpvt_small"])
def test_timm_parity_non_square(name):
    torch.manual_seed(0)
    ours, reference = _timm_pair(name)
    images = torch.randn(1, 3, 250, 330)
    with torch.no_grad():
        assert _relative_difference(ours(images), reference(images)) <= 1e-5


def test_svt_equals_timm_where_windows_divide(small_model):
    # 224 x 448: every stage's map is a multiple of the 7x7 window, so no padding, no mask.
    torch.manual_seed(0)
    ours = small_model("svt_small").eval()
    reference = timm.create_model("twins_svt_small", depths=(2, 2, 2, 2)).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(1, 3, 224, 448)
    with torch.no_grad():
        assert _relative_difference(ours(images), reference(images)) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates(name, small_model):
    model = small_model(name).eval()
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        maps = model.forward_intermediates(images, intermediates_only=True)
        final, again = model.forward_intermediates(images)
        features = model.forward_features(images)
        last_two = model.forward_intermediates(images, indices=2, intermediates_only=True)
    dims = model.embed_dims
    assert [tuple(m.shape) for m in maps] == [
        (2, dims[i], 96 // s, 128 // s) for i, s in enumerate((4, 8, 16, 32))
    ]
    for a, b in zip(maps, again, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(final, features)
    torch.testing.assert_close(last_two[1], maps[3])


def test_forward_head_pre_logits(small_model):
    model = small_model("pcpvt_small", num_classes=5).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 64, 64))
        pooled = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(logits, model.head(pooled))


@pytest.mark.parametrize("name", ["pcpvt_small", "svt_small"])
def test_grad_checkpointing_changes_nothing(name, small_model):
    torch.manual_seed(0)
    plain = small_model(name, num_classes=10, drop_path_rate=0.2).train()
    checkpointed = small_model(name, num_classes=10, drop_path_rate=0.2).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    images = torch.randn(2, 3, 64, 80)
    outputs = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws in both
        logits = model(images)
        logits.square().mean().backward()
        outputs.append(logits)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for (n, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=n)


def test_no_weight_decay_is_the_peg(small_model):
    model = small_model("svt_small")
    names = model.no_weight_decay()
    assert names and all(n.startswith("pos_block.") for n in names)
    assert names == {n for n, _ in model.named_parameters() if n.startswith("pos_block.")}


def test_reset_classifier(small_model):
    model = small_model("pcpvt_small")
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model.model_args["num_classes"] == 3
    model.reset_classifier(0, "")  # timm's: no head, no pooling -> the tokens
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 512)
    assert model.model_args["global_pool"] == ""
    model.reset_classifier(5, "avg")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_reset_classifier_keeps_device_dtype_and_mode(small_model):
    model = small_model("svt_small").to(torch.bfloat16).eval()
    model.reset_classifier(7)
    assert model.head.weight.dtype == torch.bfloat16 and not model.head.training


def test_intermediate_maps_are_contiguous_nchw(small_model):
    model = small_model("svt_small").eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 64, 96), intermediates_only=True)
    assert all(m.is_contiguous() for m in maps)
    assert maps[0].view(1, 64, -1).shape == (1, 64, 16 * 24)


@pytest.mark.parametrize("indices", [2, [0, 1], [-3]])
def test_prune_intermediate_layers(indices, small_model):
    torch.manual_seed(0)
    model = small_model("pcpvt_small").eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(images, indices, intermediates_only=True)
        take = model.prune_intermediate_layers(indices)
        pruned = model.forward_intermediates(images, take, intermediates_only=True)
    keep = max(take) + 1
    assert len(model.blocks) == len(model.feature_info) == keep
    assert model.num_features == model.embed_dims[-1] and model.num_classes == 0
    for a, b in zip(pruned, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_feature_info_is_timms():
    from timm.models import FeatureInfo

    model = twins.create_model("svt_small", device="meta")
    info = FeatureInfo(model.feature_info, out_indices=(0, 1, 2, 3))
    assert info.channels() == [64, 128, 256, 512]
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_official_initialisation():
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small")
    conv = model.patch_embeds[0].proj  # 4x4 kernel, 64 outputs: std sqrt(2 / (16 * 64))
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 64)) ** 0.5, rel=0.05)
    peg = model.pos_block[0].proj[0]  # depthwise 3x3: fan_out = 9 * 64 / 64
    assert peg.weight.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.05)
    linear = model.blocks[2][0].mlp.fc1
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not linear.bias.any()


def test_drop_path_grows_linearly():
    model = twins.create_model("pcpvt_small", drop_path_rate=0.3)
    rates = [block.drop_path.drop_prob for stage in model.blocks for block in stage]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    steps = torch.tensor(rates).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 0.3 / 15))
