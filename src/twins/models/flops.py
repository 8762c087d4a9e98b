"""Multiply-adds of one forward pass, counted by torch's FlopCounterMode on the meta device
(no memory, no compute). Reported as the paper does: multiply-adds, not FLOPs."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from twins.models.twins import Twins


def count_macs(model: Twins, image_size: int | tuple[int, int] = 224) -> int:
    """Multiply-adds of `model` for one image of `image_size` (int or (height, width))."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    args = dict(model.model_args)
    with torch.device("meta"):
        meta_model = Twins(**args, arch=model.arch).eval()
        image = torch.empty(1, args["in_chans"], height, width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(image)
    return counter.get_total_flops() // 2


def count_macs_of_call(model: torch.nn.Module, inputs: object, on: str = "meta") -> int:
    """Multiply-adds of `model(inputs)` (one image's), on a copy of it: on the meta device (no
    memory, no compute), or on the CPU where the forward needs real values (a detector's box
    selection); `inputs` are made on that device."""
    import copy

    counted = copy.deepcopy(model).to(on).float().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        counted(inputs)
    return counter.get_total_flops() // 2
