"""Optimizer parameter groups: no weight decay for biases, norm weights and the PEG; the dense
recipes' rule, mmcv's `custom_keys` (`no_decay_keys`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from twins import create_model
from twins.models.backbone import dense_backbone
from twins.train import build_config, load_config
from twins.train.optim import build_optimizer, param_groups, set_lr

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {"embed_dims": (16, 32, 40, 64), "depths": (1, 1, 1, 1)}


def test_no_decay_for_biases_norms_and_pos_block():
    model = create_model("svt_small", num_classes=10, embed_dims=(16, 32, 64, 128))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    for name, param in model.named_parameters():
        expected_no_decay = param.ndim == 1 or name.startswith("pos_block.")
        assert (name in no_decay_names) == expected_no_decay, name
    assert "pos_block.0.proj.0.weight" in no_decay_names  # a 4-D conv weight, excluded by name
    assert "head.weight" in decay_names and "head.bias" in no_decay_names
    assert any(n.endswith("norm1.weight") for n in no_decay_names)
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))


def test_adamw_and_sgd_from_the_config():
    model = create_model("pcpvt_small", num_classes=4, **TINY)
    config = build_config(
        {"semantics": "official", "beta": [0.8, 0.95], "eps": 1e-7, "weight_decay": 0.1}
    )
    adamw = build_optimizer(model, config, torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.8, 0.95) and adamw.defaults["eps"] == 1e-7
    assert adamw.defaults["fused"] is True
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    sgd = build_optimizer(
        model, build_config({"optimizer": "SGD", "momentum": 0.8}), torch.device("cpu")
    )
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8


@pytest.mark.parametrize("arch", ["pcpvt_small", "svt_small"])
def test_layer_decay_groups_and_scales_equal_timms_for_its_twins(arch):
    """timm's layer-wise lr decay on our model makes the groups it makes on timm's own Twins."""
    import timm

    def groups_by_name(model):
        names = {id(p): n for n, p in model.named_parameters()}
        groups = param_groups(model, 0.05, layer_decay=0.75)
        return sorted(
            (
                round(g["lr_scale"], 12),
                g["weight_decay"],
                tuple(sorted(names[id(p)] for p in g["params"])),
            )
            for g in groups
        )

    ours = create_model(arch, num_classes=10)
    theirs = timm.create_model(f"twins_{arch}", num_classes=10)
    assert groups_by_name(ours) == groups_by_name(theirs)
    config = build_config({"semantics": "official", "layer_decay": 0.75})
    optimizer = build_optimizer(ours, config, torch.device("cpu"))
    set_lr(optimizer, 1e-3)
    scales = sorted({round(g["lr"] / 1e-3, 12) for g in optimizer.param_groups})
    assert scales[-1] == 1.0 and scales[0] < 0.01  # the head at 1, the stem far below


# ----- The dense recipes' no-decay rule: mmcv's custom_keys, matched in full names ----- #


def conv_module(cin: int, cout: int, kernel: int) -> nn.Module:
    """mmcv's ConvModule with a BatchNorm: `conv` without bias, then `bn`."""
    module = nn.Module()
    module.conv = nn.Conv2d(cin, cout, kernel, bias=False)
    module.bn = nn.BatchNorm2d(cout)
    return module


class StandInUperNet(nn.Module):
    """A Twins dense backbone under a head whose parameter names mirror mmseg's UperNet heads
    (`decode_head.*`, `auxiliary_head.*`: ConvModules of `conv` + `bn`, a biased `conv_seg`),
    which `twins.tasks.segment.upernet` keeps so that official checkpoints load; small widths."""

    def __init__(self, variant: str, classes: int = 5) -> None:
        super().__init__()
        self.backbone = dense_backbone(variant, embed_dims=(16, 32, 40, 64), depths=(2, 2, 2, 2))
        c1, c2, c3, c4 = self.backbone.out_channels
        head = nn.Module()
        head.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_module(c4, 8, 1)) for s in (1, 2, 3, 6)
        )
        head.bottleneck = conv_module(c4 + 4 * 8, 8, 3)
        head.lateral_convs = nn.ModuleList(conv_module(c, 8, 1) for c in (c1, c2, c3))
        head.fpn_convs = nn.ModuleList(conv_module(8, 8, 3) for _ in range(3))
        head.fpn_bottleneck = conv_module(32, 8, 3)
        head.conv_seg = nn.Conv2d(8, classes, 1)
        self.decode_head = head
        aux = nn.Module()
        aux.convs = nn.ModuleList([conv_module(c3, 8, 3)])
        aux.conv_seg = nn.Conv2d(8, classes, 1)
        self.auxiliary_head = aux


def group_names(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = groups
    return {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}


@pytest.mark.parametrize("variant", ["pcpvt_small", "svt_small"])
def test_upernet_recipe_exempts_exactly_the_names_with_pos_block_or_norm(variant):
    model = StandInUperNet(variant)
    config = load_config(CONFIGS / "dense" / f"upernet_{variant}_ade20k.yaml")
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    decay, no_decay = group_names(model, optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    names = {n for n, _ in model.named_parameters()}
    assert no_decay == {n for n in names if "pos_block" in n or "norm" in n}
    assert decay == names - no_decay
    # mmcv matches substrings of the full name: every LayerNorm and PEG of the backbone ...
    assert "backbone.pos_block.0.proj.0.weight" in no_decay  # a 4-D conv, by its name
    assert "backbone.patch_embeds.0.norm.bias" in no_decay
    assert "backbone.blocks.0.1.attn.norm.weight" in no_decay  # GSA's spatial-reduction norm
    if variant == "svt_small":
        assert "backbone.norm_list.3.weight" in no_decay  # the SVT stage norms
    # ... while BatchNorm (`bn`) weights and every other bias are still decayed.
    assert "decode_head.bottleneck.bn.weight" in decay
    assert "auxiliary_head.convs.0.bn.bias" in decay
    assert {"decode_head.conv_seg.bias", "backbone.blocks.0.0.attn.proj.bias"} <= decay


@pytest.mark.parametrize(
    "recipe", ["semantic_fpn_pcpvt_small_ade20k", "retinanet_svt_small_coco_1x"]
)
def test_recipes_without_a_paramwise_rule_decay_every_parameter(recipe):
    model = StandInUperNet("svt_small")
    config = load_config(CONFIGS / "dense" / f"{recipe}.yaml")
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    decay, no_decay = group_names(model, optimizer.param_groups)
    assert no_decay == set() and decay == {n for n, _ in model.named_parameters()}
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    # An AdamW step over an empty no-decay group: each weight shrinks by lr x decay.
    weight = model.decode_head.conv_seg.weight
    before = weight.detach().clone()
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    set_lr(optimizer, 0.5)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), before * (1 - 0.5 * 1e-4))


def test_classification_keeps_its_rule_when_no_decay_keys_is_null():
    model = StandInUperNet("pcpvt_small")
    config = build_config({"semantics": "official"})
    assert config.no_decay_keys is None
    decay, no_decay = group_names(
        model, build_optimizer(model, config, torch.device("cpu")).param_groups
    )
    assert "decode_head.bottleneck.bn.weight" in no_decay  # 1-D: exempt under this rule
    assert "decode_head.conv_seg.bias" in no_decay
    assert "backbone.pos_block.0.proj.0.weight" in no_decay  # the backbone's no_weight_decay()
