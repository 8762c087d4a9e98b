"""The timed steps: inference (forward under no_grad) and training (forward, loss, backward,
AdamW step), for our model and for timm's implementation of the same variant carrying the same
weights. Both get the same inputs, precision, memory format, compilation and optimiser. The loss
is the task's (`twins.train.task.Task.benchmark_batch`): the cross-entropy of the logits (a
segmenter's "out" per pixel), or a detector's own training losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function

from twins.benchmark.hardware import DTYPES
from twins.benchmark.parts import LOSS_RANGE
from twins.errors import TwinsError
from twins.models import Twins
from twins.models.arguments import STAGE_ARGS
from twins.train import speed

# Our model_args -> timm.models.twins.Twins arguments (the official names, mostly shared).
_SAME_NAMES = (
    *STAGE_ARGS,
    "num_classes",
    "in_chans",
    "patch_size",
    "attn_drop_rate",
    "drop_path_rate",
)


def timm_twin(model: Twins, image_size: int) -> nn.Module:
    """timm's Twins with `model`'s architecture and a copy of its weights (loaded strictly)."""
    from timm.models.twins import Twins as TimmTwins

    args = model.model_args
    if args["act_layer"] != "gelu":
        raise TwinsError(
            f"timm's Twins has only the exact GELU, not {args['act_layer']!r}: "
            "compare a model with act_layer gelu"
        )
    kwargs: dict[str, Any] = {name: args[name] for name in _SAME_NAMES}
    drop = args["drop_rate"]
    kwargs.update(drop_rate=drop, pos_drop_rate=drop, proj_drop_rate=drop, img_size=image_size)
    reference = TimmTwins(**kwargs)
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW with the fused kernel where this torch has it for the device, else foreach."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, foreach=True)


# (the model to run, its inputs, their targets) -> the loss a training step minimises
Loss = Callable[[Callable, Any, Any], torch.Tensor]


def make_step(
    model: nn.Module,
    mode: str,
    images: Any,
    labels: Any,
    precision: str,
    compiled: bool,
    loss_of: Loss,
) -> Callable[[], None]:
    """One benchmark step of `model` on the given batch (a tensor, or a detector's list of
    images) and targets."""
    device_type = (images[0] if isinstance(images, list) else images).device.type
    autocast_dtype = DTYPES[precision]
    use_autocast = precision != "fp32"
    run = speed.compiled(model) if compiled else model  # as `twins train` compiles

    if mode == "infer":
        model.eval()

        def infer_step() -> None:
            with torch.no_grad(), torch.autocast(device_type, autocast_dtype, use_autocast):
                run(images)

        return infer_step

    model.train()
    optimizer = _adamw(model)
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")

    def train_step() -> None:
        with torch.autocast(device_type, autocast_dtype, use_autocast), record_function(LOSS_RANGE):
            loss = loss_of(run, images, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return train_step
