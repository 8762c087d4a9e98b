"""The optimizer: AdamW (or SGD with momentum) with the official no-decay parameter groups.

As in the official Twins code (DeiT's `create_optimizer` via timm's `param_groups_weight_decay`),
biases and normalisation weights (every 1-D parameter) and the model's `no_weight_decay()` names
(the PEG convolutions `pos_block.*`) get no weight decay.
"""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, then parameters without decay."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.Optimizer:
    """`config` is a TrainConfig. The learning rate is set by the schedule before every step."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum)
    # The fused kernel does the whole update in one launch; it exists for CUDA and CPU.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups, lr=config.base_lr, betas=tuple(config.beta), eps=config.eps, fused=fused
    )
