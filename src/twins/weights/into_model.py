"""Put weights into a model, or say in one line why they do not fit: names, shapes, dtypes
(no integer or boolean tensor for a float parameter) and values (no NaN or infinity)."""

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


def _problems(kinds: list[tuple[str, list[str]]]) -> str | None:
    """ "kind first names; kind ..." for the kinds that name something, None when none does."""
    return "; ".join(f"{kind} {_names(names)}" for kind, names in kinds if names) or None


def mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """None when the state dict loads strictly, else what differs: missing, unexpected, shapes,
    dtypes. Only names, shapes and dtypes are compared, so `model` may live on the meta device."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    shared = [name for name in expected if name in state_dict]
    shapes = [
        f"{name} {tuple(state_dict[name].shape)} in file vs {tuple(expected[name].shape)} in model"
        for name in shared
        if state_dict[name].shape != expected[name].shape
    ]
    # load_state_dict would cast an integer or boolean tensor into a float parameter silently.
    dtypes = [
        f"{name} {state_dict[name].dtype} in file vs {expected[name].dtype} in model"
        for name in shared
        if expected[name].is_floating_point() and not state_dict[name].is_floating_point()
    ]
    return _problems(
        [("missing", missing), ("unexpected", unexpected), ("shape", shapes), ("dtype", dtypes)]
    )


def value_problems(
    state_dict: Mapping[str, torch.Tensor], *, require_float: bool = True
) -> str | None:
    """None when every floating-point tensor is finite and, with `require_float`, every tensor is
    floating point (all a Twins model holds), else which tensors are not."""
    not_float = [
        f"{name} ({tensor.dtype})"
        for name, tensor in state_dict.items()
        if require_float and not tensor.is_floating_point()
    ]
    not_finite = [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    return _problems(
        [("not floating point:", not_float), ("NaN or infinite values in", not_finite)]
    )


def check_values(
    state_dict: Mapping[str, torch.Tensor], *, what: str = "the weights", require_float: bool = True
) -> None:
    """Refuse NaN or infinite weights and, with `require_float`, integer or boolean ones."""
    problem = value_problems(state_dict, require_float=require_float)
    if problem is not None:
        raise TwinsError(
            f"{what} cannot be used: {problem}; the file is damaged or was not written as "
            "model weights (a diverged run writes NaN): use other weights"
        )


def load_into_model(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, drop_mismatched_head: bool = False
) -> None:
    """Strict `load_state_dict` with a one-line `TwinsError` naming the first mismatches, after
    checking the values (`check_values`).

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
            "(arch, num_classes, model_args)"
        )
    check_values(tensors, require_float=False)  # dtypes were compared with the model's
    model.load_state_dict(tensors, strict=True)
