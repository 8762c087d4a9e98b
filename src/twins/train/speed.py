"""The speed switches of training: `channels_last` (weights and images in channels-last memory
format, the layout cuDNN's and oneDNN's convolutions read fastest) and `compile` (`torch.compile`
of the model the training step runs).

Compilation is per input size (`dynamic=False`): with gradients enabled, torch 2.14.1's Inductor
fails on a second input size compiled with dynamic shapes (README, "torch.compile at several
input sizes"), so each size compiles a graph of its own. A run whose batches change size (a
detector's padded images) compiles each new size up to torch's limit
(`torch._dynamo.config.recompile_limit`) and runs the sizes past it eagerly. Only the training
forward is compiled: evaluation runs the plain module, whose other batch and image sizes would
each compile for a single pass. The plain module keeps its parameter names, so checkpoints hold
the official keys, never compile's `_orig_mod.` prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def to_memory_format(module: nn.Module, config: Any) -> nn.Module:
    """`module` with its 4-d weights channels-last where `config.channels_last` (in place: the
    parameters stay the same objects, so an optimizer built before still holds them)."""
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def inputs_in_memory_format(inputs: Any, config: Any) -> Any:
    """A batch of images (N x C x H x W) channels-last where `config.channels_last`; anything
    else (a detector's list of images, which it batches itself) as it is."""
    if config.channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def compiled(model: nn.Module) -> nn.Module:
    """`model` compiled once per input size (`dynamic=False`, see the module's docstring)."""
    return torch.compile(model, dynamic=False)


def training_model(model: nn.Module, config: Any) -> nn.Module:
    """What the training step calls: `model` compiled where `config.compile`, else itself."""
    return compiled(model) if config.compile else model
