"""The constructor's arguments, checked: per-stage values expanded to one per stage, each of the
type and range it must have. A mistake names the argument and what it must be."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from twins.errors import TwinsError

# Activation names of `model_args` -> the `approximate` argument of the GELU.
ACT_LAYERS = {"gelu": "none", "gelu_tanh": "tanh"}
GLOBAL_POOLS = ("avg", "")
# The per-stage arguments: what the stages are, one value per stage (timm's names too).
STAGE_ARGS = ("embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios", "wss")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def stage_count(depths: Any) -> int:
    """Number of stages, from `depths`: a list of positive block counts, one per stage."""
    if (
        not isinstance(depths, Sequence)
        or isinstance(depths, str)
        or not depths
        or not all(_positive_int(d) for d in depths)
    ):
        raise TwinsError(
            f"depths={depths!r}: give a list of positive block counts, one per stage "
            "(e.g. [3, 4, 6, 3])",
            argument="depths",
        )
    return len(depths)


def per_stage(name: str, value: Any, stages: int, integer: bool = True) -> tuple:
    """`value` for every stage (one number) or one per stage (a list of `stages` numbers)."""
    valid = _positive_int if integer else _positive_number
    kind = "positive integer" if integer else "positive number"
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if values is None and valid(value):
        return (value,) * stages
    if values is None or not all(valid(v) for v in values):
        raise TwinsError(
            f"{name}={value!r}: give a {kind} for every stage, or a list of {stages} "
            f"(one per stage)",
            argument=name,
        )
    if len(values) != stages:
        raise TwinsError(
            f"{name} has {len(values)} entries but depths has {stages} stages: give one per stage",
            argument=name,
        )
    return values


def check_rate(name: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise TwinsError(f"{name}={value!r}: give a probability in [0, 1)", argument=name)
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise TwinsError(f"{name}={value!r} is unknown: use one of {names}", argument=name)
    return value


def check_count(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise TwinsError(f"{name}={value!r}: give an integer >= {minimum}", argument=name)
    return int(value)


def check_heads(embed_dims: Sequence[int], num_heads: Sequence[int]) -> None:
    for stage, (dim, heads) in enumerate(zip(embed_dims, num_heads, strict=True)):
        if dim % heads:
            raise TwinsError(
                f"stage {stage}: embed_dims {dim} is not divisible by num_heads {heads}; "
                "choose widths that are multiples of their head counts",
                argument="num_heads",
            )
