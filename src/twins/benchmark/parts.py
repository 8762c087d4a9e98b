"""`--profile` by part: a step's operator time split by the part of the model (or of the training
step) it serves, forward and backward apart, counted the same way for our model and timm's.

- While profiling, the modules that make the parts (a block's attention, MLP and norms, the patch
  embeddings, the PEGs, the final norm and head, and the model itself) open a torch.profiler
  range named `nn.Module: <class>` around their call (hooks, removed afterwards). Our CPU fast
  path runs a block's attention and MLP without calling those modules; it opens the same ranges
  itself (`twins.models.fast_path`).
- A forward operator counts to its innermost range: the patch embedding's own LayerNorm to the
  patch embedding, GSA's sub-sampling convolution and norm to the attention, timm's residual adds
  (outside its layers) to the model itself, the cross-entropy to the loss.
- A backward operator counts to the range of the forward operator that made its autograd node:
  the two share a sequence number, and the node takes the number the last forward operator to
  see it was given.
- The optimizer's step and zero_grad are ranges of torch's own (`Optimizer.step#AdamW.step`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.autograd.profiler import record_function

# Module classes (ours and timm's) -> the part they make.
_PART_OF_CLASS = {
    "GlobalSubSampleAttention": "attention (GSA)",
    "GlobalSubSampleAttn": "attention (GSA)",
    "LocallyGroupedAttention": "attention (LSA)",
    "LocallyGroupedAttn": "attention (LSA)",
    "Mlp": "MLP",
    "LayerNorm": "LayerNorm",
    "PosConv": "PEG",
    "PatchEmbed": "patch embedding",
    "Linear": "head",
}
MODEL = "the rest of the model"  # residual adds, stochastic depth, reshapes, pooling
LOSS = "loss"
OPTIMIZER = "optimizer"
OTHER = "other"  # outside every range: the gradient's seed, AccumulateGrad, ...
LOSS_RANGE = "twins.benchmark: loss"

# The modules that get a range, by their place in the model (the same names in both; under a
# prefix in a dense model's backbone). The model itself gets one too.
_RANGED = re.compile(
    r"(.*\.)?(blocks\.\d+\.\d+\.(attn|mlp|norm1|norm2)|patch_embeds\.\d+|pos_block\.\d+)"
    r"|norm|head"
)
_BACKWARD = "autograd::engine::evaluate_function: "


@contextmanager
def module_ranges(model: nn.Module) -> Iterator[None]:
    """Within: the part-making modules of `model` open their ranges around each call."""
    handles = []
    for name, module in model.named_modules():
        if name == "" or _RANGED.fullmatch(name):
            handles += _range_hooks(module)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _range_hooks(module: nn.Module) -> list[Any]:
    ranges = []

    def enter(module: nn.Module, args: Any) -> None:
        ranges.append(record_function(f"nn.Module: {type(module).__name__}").__enter__())

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        ranges.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def split_by_part(events: Any, iters: int, top: int = 3) -> list[dict[str, Any]]:
    """The profiled `events` (torch.profiler's FunctionEvents of `iters` steps) as parts: each
    part's forward and backward self time per step, and the operators taking most of it."""
    forward_part_of_sequence: dict[int, str] = {}
    placed = []
    for event in sorted(events, key=lambda event: event.time_range.start):
        backward, part = _place(event)
        if backward is None and event.sequence_nr >= 0:
            forward_part_of_sequence[event.sequence_nr] = part  # the last one wins
        placed.append((event, backward, part))
    times: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    operators: dict[str, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    for event, backward, part in placed:
        if backward is not None:
            part = forward_part_of_sequence.get(backward, OTHER)
        milliseconds = event.self_cpu_time_total / 1e3 / iters
        times[part][backward is not None] += milliseconds
        phase = "backward" if backward is not None else "forward"
        operators[part][(event.name, phase)] += milliseconds
    rows = []
    for part, (forward_ms, backward_ms) in times.items():
        largest = sorted(operators[part].items(), key=lambda item: item[1], reverse=True)[:top]
        rows.append(
            {
                "part": part,
                "forward_ms": forward_ms,
                "backward_ms": backward_ms,
                "operators": [
                    {"name": name, "phase": phase, "ms": ms} for (name, phase), ms in largest
                ],
            }
        )
    return sorted(rows, key=lambda row: row["forward_ms"] + row["backward_ms"], reverse=True)


def side_by_side(profiles: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """The implementations that have parts, and one row per part (in the order they first
    appear), then "total": each implementation's forward and backward ms, one after the other."""
    times = {
        name: {row["part"]: (row["forward_ms"], row["backward_ms"]) for row in profile["parts"]}
        for name, profile in profiles.items()
        if "parts" in profile
    }
    names = list(times)
    parts = list(dict.fromkeys(part for by_part in times.values() for part in by_part))
    rows = [
        (part, [ms for name in names for ms in times[name].get(part, (0.0, 0.0))]) for part in parts
    ]
    rows.append(
        ("total", [sum(column) for column in zip(*(cells for _, cells in rows), strict=True)])
    )
    return names, rows


def _place(event: Any) -> tuple[int | None, str]:
    """(the sequence number of the autograd node it runs in, or None in the forward; the part
    of its innermost range)."""
    while event is not None:
        name = event.name
        if name.startswith(_BACKWARD):
            return event.sequence_nr, OTHER
        if name.startswith("nn.Module: "):
            return None, _PART_OF_CLASS.get(name.removeprefix("nn.Module: "), MODEL)
        if name == LOSS_RANGE:
            return None, LOSS
        if name.startswith("Optimizer."):
            return None, OPTIMIZER
        event = event.cpu_parent
    return None, OTHER
