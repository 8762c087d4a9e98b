"""`pretrained=` of the segmenters: official mmsegmentation checkpoints (synthetic ones in the
released layout, dense FACTS §3a-3d) load strictly and give the logits of their parts loaded by
hand; ImageNet classifiers load into the backbone; misfits are one clear error."""

from __future__ import annotations

import logging

import pytest
import torch

import twins
from twins.errors import TwinsError
from twins.models import VARIANTS
from twins.tasks.segment.checkpoint import segmenter_layout
from twins.weights import mismatches, model_metadata, save_weights

TINY = {"embed_dims": [16, 32, 40, 64], "num_heads": [1, 2, 5, 8], "depths": [1, 1, 1, 1]}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def conv_module(prefix: str, out: int, into: int, kernel: int) -> dict[str, tuple[int, ...]]:
    """An mmcv ConvModule with SyncBN: a conv without bias, then `bn`."""
    shapes = {f"{prefix}.conv.weight": (out, into, kernel, kernel)}
    shapes |= {
        f"{prefix}.bn.{name}": () if name == "num_batches_tracked" else (out,) for name in BN
    }
    return shapes


def official_upernet_heads(widths: list[int], classes: int) -> dict[str, tuple[int, ...]]:
    """`decode_head.*` and `auxiliary_head.*` of an official UperNet checkpoint (FACTS §3c)."""
    c1, c2, c3, c4 = widths
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(4):
        shapes |= conv_module(f"decode_head.psp_modules.{i}.1", 512, c4, 1)
    shapes |= conv_module("decode_head.bottleneck", 512, c4 + 4 * 512, 3)
    for i, width in enumerate((c1, c2, c3)):
        shapes |= conv_module(f"decode_head.lateral_convs.{i}", 512, width, 1)
        shapes |= conv_module(f"decode_head.fpn_convs.{i}", 512, 512, 3)
    shapes |= conv_module("decode_head.fpn_bottleneck", 512, 2048, 3)
    shapes |= {
        "decode_head.conv_seg.weight": (classes, 512, 1, 1),
        "decode_head.conv_seg.bias": (classes,),
    }
    shapes |= conv_module("auxiliary_head.convs.0", 256, c3, 3)
    shapes |= {
        "auxiliary_head.conv_seg.weight": (classes, 256, 1, 1),
        "auxiliary_head.conv_seg.bias": (classes,),
    }
    return shapes  # fmt: skip


def official_semantic_fpn_heads(widths: list[int], classes: int) -> dict[str, tuple[int, ...]]:
    """`neck.*` and `decode_head.*` of an mmseg Semantic FPN checkpoint (FACTS §3d)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, width in enumerate(widths):
        shapes |= {f"neck.lateral_convs.{i}.conv.weight": (256, width, 1, 1)}
        shapes |= {f"neck.lateral_convs.{i}.conv.bias": (256,)}
        shapes |= {f"neck.fpn_convs.{i}.conv.weight": (256, 256, 3, 3)}
        shapes |= {f"neck.fpn_convs.{i}.conv.bias": (256,)}
    for level in range(4):
        for k in range(max(1, level)):
            into = 256 if k == 0 else 128
            shapes |= conv_module(f"decode_head.scale_heads.{level}.{2 * k}", 128, into, 3)
    shapes |= {
        "decode_head.conv_seg.weight": (classes, 128, 1, 1),
        "decode_head.conv_seg.bias": (classes,),
    }
    return shapes  # fmt: skip


def official_checkpoint(
    variant: str, heads: dict[str, tuple[int, ...]], device: str = "cpu", **backbone
) -> dict[str, torch.Tensor]:
    """The classifier's keys (with its unused final norm and 1000-class head, as the official
    dense backbone keeps them) under `backbone.`, SVT's `norm_list`, and `heads`, random values."""
    generator = torch.Generator().manual_seed(0)
    classifier = twins.create_model(variant, device=device, **backbone)
    tensors = {f"backbone.{k}": v for k, v in classifier.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if VARIANTS[variant].get("wss"):
        for i, width in enumerate(classifier.embed_dims):
            shapes |= {f"backbone.norm_list.{i}.weight": (width,)}
            shapes |= {f"backbone.norm_list.{i}.bias": (width,)}
    shapes |= heads
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}

    def value(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name.endswith("num_batches_tracked"):
            return torch.tensor(1000)
        if name.endswith("running_var"):
            return torch.rand(shape, generator=generator) + 0.5
        return torch.randn(shape, generator=generator) * 0.05

    return {name: value(name, shape) for name, shape in shapes.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_upernet_layout_fits_every_upernet(variant):
    """Key set and shapes, on the meta device: the real-size layout of each released model."""
    model = twins.create_model(f"upernet_{variant}", device="meta")
    widths = list(model.backbone.out_channels)
    checkpoint = official_checkpoint(variant, official_upernet_heads(widths, 150), device="meta")
    assert mismatches(model, segmenter_layout(checkpoint)) is None


def save_official(checkpoint: dict[str, torch.Tensor], path) -> str:
    """As mmcv's save_checkpoint writes it: the weights under `state_dict`, beside `meta`."""
    meta = {"mmseg_version": "0.12.0", "CLASSES": [f"c{i}" for i in range(150)], "iter": 160000}
    torch.save({"meta": meta, "state_dict": checkpoint}, path)
    return str(path)


def by_hand(name: str, checkpoint: dict[str, torch.Tensor], **backbone) -> torch.nn.Module:
    """The segmenter with each part's weights put in by its own `load_state_dict`."""
    model = twins.create_model(name, **backbone)
    for part, module in model.named_children():
        prefix = f"{part}."
        own = {k.removeprefix(prefix): v for k, v in checkpoint.items() if k.startswith(prefix)}
        if part == "backbone":
            own = {k: v for k, v in own.items() if not k.startswith(("norm.", "head."))}
        if part == "neck":
            own = {
                k.replace("lateral_convs.", "inner_blocks.")
                .replace("fpn_convs.", "layer_blocks.")
                .replace(".conv.", ".0."): v
                for k, v in own.items()
            }
        module.load_state_dict(own, strict=True)
    return model.eval()


@pytest.mark.parametrize("variant", ["pcpvt_small", "svt_base"])
def test_official_upernet_checkpoint_gives_the_logits_of_its_parts(tmp_path, variant):
    widths = TINY["embed_dims"]
    checkpoint = official_checkpoint(variant, official_upernet_heads(widths, 150), **TINY)
    path = save_official(checkpoint, tmp_path / "upernet.pth")
    loaded = twins.create_model(f"upernet_{variant}", pretrained=path, **TINY).eval()
    expected = by_hand(f"upernet_{variant}", checkpoint, **TINY)
    images = torch.randn(1, 3, 45, 39)
    with torch.no_grad():
        got, want = loaded(images), expected(images)
    torch.testing.assert_close(got["out"], want["out"], rtol=0, atol=0)
    torch.testing.assert_close(got["aux"], want["aux"], rtol=0, atol=0)


def test_semantic_fpn_checkpoint_in_mmseg_names_loads(tmp_path):
    widths = TINY["embed_dims"]
    checkpoint = official_checkpoint("svt_small", official_semantic_fpn_heads(widths, 150), **TINY)
    path = tmp_path / "fpn.pth"
    torch.save(checkpoint, path)  # a bare state dict works too
    loaded = twins.create_model("semantic_fpn_svt_small", pretrained=path, **TINY).eval()
    expected = by_hand("semantic_fpn_svt_small", checkpoint, **TINY)
    images = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["out"], expected(images)["out"], rtol=0, atol=0)


@pytest.mark.slow  # a 54 M-parameter checkpoint written and read: ~5 s alone, more when shared
def test_real_size_official_upernet_checkpoint_loads(tmp_path):
    checkpoint = official_checkpoint(
        "pcpvt_small", official_upernet_heads([64, 128, 320, 512], 150)
    )
    path = save_official(checkpoint, tmp_path / "upernet_pcpvt_small.pth")
    loaded = twins.create_model("upernet_pcpvt_small", pretrained=path).eval()
    expected = by_hand("upernet_pcpvt_small", checkpoint)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["out"], expected(images)["out"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"missing decode_head\.conv_seg\.bias"),
        ("shape", r"shape auxiliary_head\.convs\.0\.conv\.weight \(256, 41, 3, 3\) in file"),
        ("unexpected", r"unexpected decode_head\.extra\.weight"),
    ],
)
def test_misfit_checkpoint_is_one_error_naming_the_keys(tmp_path, change, message):
    checkpoint = official_checkpoint(
        "pcpvt_small", official_upernet_heads(TINY["embed_dims"], 150), **TINY
    )
    if change == "missing":
        del checkpoint["decode_head.conv_seg.bias"]
    elif change == "shape":
        checkpoint["auxiliary_head.convs.0.conv.weight"] = torch.zeros(256, 41, 3, 3)
    else:
        checkpoint["decode_head.extra.weight"] = torch.zeros(3)
    path = save_official(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(TwinsError, match=message) as error:
        twins.create_model("upernet_pcpvt_small", pretrained=path, **TINY)
    assert "\n" not in str(error.value)
    assert error.value.argument == "pretrained"


def test_imagenet_classifier_is_the_fine_tuning_start(tmp_path, caplog):
    classifier = twins.create_model("svt_small", **TINY)
    path = tmp_path / "svt_small.safetensors"
    save_weights(classifier.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="twins.notes"):
        model = twins.create_model("upernet_svt_small", num_classes=4, pretrained=path, **TINY)
    notes = [record.getMessage() for record in caplog.records]
    assert len(notes) == 1 and "head and final norm dropped" in notes[0]
    assert "norm_list" in notes[0]
    own = model.backbone.state_dict()
    for name, tensor in classifier.state_dict().items():
        if not name.startswith(("head.", "norm.")):
            assert torch.equal(own[name], tensor), name
    assert torch.equal(own["norm_list.0.weight"], torch.ones(16))


def test_classifier_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "pcpvt.pth"
    torch.save(twins.create_model("pcpvt_small", **TINY).state_dict(), path)
    wider = {**TINY, "embed_dims": [16, 32, 40, 72]}
    with pytest.raises(TwinsError, match="backbone does not fit semantic_fpn_pcpvt_small"):
        twins.create_model("semantic_fpn_pcpvt_small", pretrained=path, **wider)


def test_load_model_rebuilds_a_segmenter_from_its_file(tmp_path):
    torch.manual_seed(0)
    model = twins.create_model("upernet_svt_small", num_classes=6, **TINY).eval()
    path = tmp_path / "segmenter.safetensors"
    save_weights(model.state_dict(), path, metadata=model_metadata(model))
    loaded = twins.load_model(path)
    assert loaded.arch == "upernet_svt_small" and loaded.model_args == model.model_args
    images = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["out"], model(images)["out"], rtol=0, atol=0)
    # The same file also starts a new run of the same segmenter.
    again = twins.create_model("upernet_svt_small", num_classes=6, pretrained=path)
    assert again.model_args == model.model_args
