"""The optimizer: the semantics' AdamW (or SGD with momentum) over the official parameter groups.

As in the official Twins code (DeiT's `create_optimizer` via timm's `param_groups_weight_decay`),
biases and normalisation weights (every 1-D parameter) and the model's `no_weight_decay()` names
(the PEG convolutions `pos_block.*`; those of its submodules too, as a backbone's) get no weight
decay; the seed's `get_param_groups` makes the same two groups. With `layer_decay`, timm's
`param_groups_layer_decay` makes the groups instead (one per layer of the model's
`group_matcher`, each with its `lr_scale`), as timm's fine-tuning recipes do.

A config's `no_decay_keys` (the dense recipes) replaces that rule with mmcv 1.2's
`paramwise_cfg=dict(custom_keys={key: dict(decay_mult=0.)})`: no decay for exactly the
parameters whose full names contain one of the keys, every other one decayed, BatchNorm weights
and biases included; an empty list decays every parameter.

The AdamW is MindSpore's `AdamWeightDecay` (no bias correction) under the seed's semantics,
torch's elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from twins.train.adam_weight_decay import AdamWeightDecay


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 0.0,
    no_decay_keys: list[str] | None = None,
) -> list[dict]:
    """Decayed weights, then parameters without decay; with `layer_decay`, timm's per-layer
    groups (each with `lr_scale`); with `no_decay_keys`, mmcv's substring rule."""
    if no_decay_keys is not None:
        return _split(model, weight_decay, lambda name, _: any(k in name for k in no_decay_keys))
    skip = no_weight_decay_names(model)
    if layer_decay:
        from timm.optim import param_groups_layer_decay

        return param_groups_layer_decay(
            model, weight_decay=weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay
        )
    return _split(model, weight_decay, lambda name, param: param.ndim <= 1 or name in skip)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The full names of what the model's modules list in `no_weight_decay()` (timm's hook), so
    that a backbone inside a dense model keeps its own exemptions."""
    names = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            names |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    return names


def _split(model: nn.Module, weight_decay: float, exempt: Callable) -> list[dict]:
    """Two groups of the trained parameters: the decayed, then those `exempt(name, param)`."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if exempt(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: Any, device: torch.device) -> torch.optim.Optimizer:
    """`config` is a TrainConfig. The learning rate is set from the schedule before every step
    (times each group's `lr_scale` under layer decay)."""
    groups = param_groups(model, config.weight_decay, config.layer_decay, config.no_decay_keys)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum)
    if config.semantics == "seed":
        return AdamWeightDecay(groups, lr=config.base_lr, betas=tuple(config.beta), eps=config.eps)
    # The fused kernel does the whole update in one launch; it exists for CUDA and CPU.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups, lr=config.base_lr, betas=tuple(config.beta), eps=config.eps, fused=fused
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
