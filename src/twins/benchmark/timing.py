"""Alternated timing: each implementation runs a round of steps in turn, several times, and
each round's ratio compares runs made seconds apart, so drifts of a busy machine (other
processes, clocks, thermals) fall on both. The median of the rounds is reported.

Page faults are counted per step too (the process's minor faults over a round, which on the CPU
are the step's): a step that writes fresh memory (a large new tensor, which the allocator maps
from the kernel anew each time) pays for the kernel zeroing every page, and how many of its
tensors the allocator reuses instead depends on the process's history, so they explain much of
the spread between runs of the same comparison."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from twins.benchmark.hardware import synchronize
from twins.memory import PeakMemory


@dataclass
class Timing:
    seconds_per_step: list[float] = field(default_factory=list)  # one entry per round
    page_faults_per_step: list[float] = field(default_factory=list)  # one entry per round
    peak_memory_mib: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_step)


def alternate(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    warmup: int,
    iters: int,
    rounds: int,
) -> dict[str, Timing]:
    """Warm each step up (compilation happens here), then time `rounds` rounds of `iters`
    steps each, alternating the implementations and reversing their order every round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    synchronize(device)
    memory = PeakMemory(device)
    timings = {name: Timing() for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            memory.reset()
            synchronize(device)
            faults, start = _minor_faults(), time.perf_counter()
            for _ in range(iters):
                steps[name]()
            synchronize(device)
            timings[name].seconds_per_step.append((time.perf_counter() - start) / iters)
            timings[name].page_faults_per_step.append((_minor_faults() - faults) / iters)
            timings[name].peak_memory_mib = max(timings[name].peak_memory_mib, memory.read_mib())
    return timings


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def round_ratios(ours: Timing, reference: Timing) -> list[float]:
    """Per-round speed of ours relative to the reference (> 1: ours is faster)."""
    return [r / o for o, r in zip(ours.seconds_per_step, reference.seconds_per_step, strict=True)]
