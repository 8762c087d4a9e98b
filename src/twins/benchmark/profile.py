"""`--profile`: where a step's time goes. After the timed rounds, each implementation runs a few
more steps under torch.profiler; the result lists the GPU kernels (on CUDA) or the operators (on
CPU) that took the most self time, per step, and on CPU the same time split by the part of the
model it serves, forward and backward (`twins.benchmark.parts`; not for compiled models, whose
graphs fuse across parts)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from twins.benchmark.hardware import synchronize
from twins.benchmark.parts import module_ranges, split_by_part


def profile_steps(
    steps: dict[str, Callable[[], object]],
    models: dict[str, nn.Module],
    device: torch.device,
    iters: int,
    compiled: bool,
    top: int = 15,
) -> dict[str, dict[str, Any]]:
    """For each implementation: its self time per step and the `top` entries taking most of it;
    on CPU and uncompiled, the time by part too."""
    gpu = device.type == "cuda"
    by_part = not gpu and not compiled
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    profiles = {}
    for name, step in steps.items():
        synchronize(device)
        ranges = module_ranges(models[name]) if by_part else contextlib.nullcontext()
        with ranges, profile(activities=activities) as profiler:
            for _ in range(iters):
                step()
            synchronize(device)
        profiles[name] = _top_entries(profiler.key_averages(), gpu, iters, top)
        if by_part:
            profiles[name]["parts"] = split_by_part(profiler.events(), iters)
    return profiles


def _top_entries(averages: Any, gpu: bool, iters: int, top: int) -> dict[str, Any]:
    # On CUDA the kernels carry the time (an operator's own device time repeats its kernels');
    # on CPU the operators' self times add up without double counting.
    entries = []
    for event in averages:
        if gpu and event.device_type != DeviceType.CUDA:
            continue
        self_us = event.self_device_time_total if gpu else event.self_cpu_time_total
        if self_us > 0:
            entries.append((event.key, self_us, event.count))
    total_us = sum(self_us for _, self_us, _ in entries)
    entries.sort(key=lambda entry: entry[1], reverse=True)
    return {
        "kind": "GPU kernels" if gpu else "CPU operators",
        "ms_per_step": total_us / 1e3 / iters,
        "entries": [
            {
                "name": key,
                "ms_per_step": self_us / 1e3 / iters,
                "share": self_us / total_us,
                "calls_per_step": count / iters,
            }
            for key, self_us, count in entries[:top]
        ],
    }
