"""The device and the numeric precision a run uses, mapped from the seed's settings.

The seed's `amp_level` follows MindSpore: O0 float32; O1 and O2 half precision for most ops with
float32 where it matters; O3 the whole network in float16. Here O1, O2 and O3 all run
`torch.autocast`, which keeps the numerically sensitive ops (norms, softmax, reductions, the
loss) in float32: bfloat16 on GPUs that support it (no loss scaling needed), otherwise float16
with a `GradScaler` (dynamic when `is_dynamic_loss_scale`, else fixed at `loss_scale`), where a
step whose gradients overflow is skipped, as the seed's `TrainOneStepWithLossScaleCell` does.
On a CPU every level runs in float32: bfloat16 autocast is slower than float32 on most CPUs.
`keep_bn_fp32` has nothing to change: autocast always keeps normalisation in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype; None runs float32
    scaler: torch.amp.GradScaler | None = None
    fixed_scale: float | None = None  # with a static loss scale, the value to keep

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).removeprefix("torch.")
        if self.scaler is None:
            return f"{name} autocast"
        kind = "fixed" if self.fixed_scale else "dynamic"
        return f"{name} autocast, {kind} loss scale"


def build_precision(config, device: torch.device) -> Precision:
    """`config` is a TrainConfig."""
    if config.amp_level == "O0" or device.type != "cuda":
        return Precision(device, None)
    if torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16)
    if config.is_dynamic_loss_scale:
        scaler = torch.amp.GradScaler("cuda", init_scale=config.loss_scale)
        return Precision(device, torch.float16, scaler)
    # A fixed scale: the scaler still finds overflows (and the step is skipped), and `update`
    # is given the same scale back every step.
    scaler = torch.amp.GradScaler("cuda", init_scale=config.loss_scale)
    return Precision(device, torch.float16, scaler, fixed_scale=config.loss_scale)


def hardware_notice(config, precision: Precision) -> str | None:
    """One line saying how the seed's hardware-specific settings were mapped, or None."""
    parts = []
    device = str(precision.device)
    if config.device_target == "Ascend":
        parts.append(f"device_target Ascend runs on {device}")
    if config.amp_level != "O0" and precision.dtype is None:
        parts.append(f"amp_level {config.amp_level} runs float32 on {device}")
    elif config.amp_level != "O0" and config.device_target == "Ascend":
        parts.append(f"amp_level {config.amp_level} runs {precision.describe()}")
    if config.keep_bn_fp32:
        parts.append("keep_bn_fp32 is always so here (autocast keeps norms in float32)")
    return "notice: " + "; ".join(parts) if parts else None
