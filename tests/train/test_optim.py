"""Optimizer parameter groups: no weight decay for biases, norm weights and the PEG."""

from __future__ import annotations

import pytest
import torch

from twins import create_model
from twins.train import build_config
from twins.train.optim import build_optimizer, param_groups, set_lr

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
