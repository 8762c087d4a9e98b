"""Put weights into a model, or say in one line why they do not fit."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from twins.errors import TwinsError

HEAD_KEYS = ("head.weight", "head.bias")
SHOWN = 3


def _names(names: list[str]) -> str:
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """None when the state dict loads strictly, else what differs: missing, unexpected, shapes."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    shapes = [
        f"{name} {tuple(state_dict[name].shape)} in file vs {tuple(tensor.shape)} in model"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if shapes:
        problems.append(f"shape {_names(shapes)}")
    return "; ".join(problems) or None


def load_into_model(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, drop_mismatched_head: bool = False
) -> None:
    """Strict `load_state_dict` with a one-line `TwinsError` naming the first mismatches.

    `drop_mismatched_head` keeps the model's own classifier when the file's has another number of
    classes (fine-tuning from weights trained on another label set).
    """
    tensors = dict(state_dict)
    if drop_mismatched_head:
        own = model.state_dict()
        for name in HEAD_KEYS:
            if name in tensors and (name not in own or own[name].shape != tensors[name].shape):
                del tensors[name]
        missing_head = [name for name in HEAD_KEYS if name in own and name not in tensors]
        extra = {name: own[name] for name in missing_head}
        tensors.update(extra)
    problem = mismatches(model, tensors)
    if problem is not None:
        arch = getattr(model, "arch", None) or type(model).__name__
        raise TwinsError(
            f"weights do not fit {arch}: {problem}; build the model the file was made for "
            "(--arch, num_classes, shape overrides)"
        )
    model.load_state_dict(tensors, strict=True)
