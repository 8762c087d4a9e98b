"""Peak memory of this process since a reset: what `twins benchmark` reports per round and
`twins train --dry-run` reports of one step."""

from __future__ import annotations

import platform
import resource

import torch


class PeakMemory:
    """Peak memory since the last `reset`: allocated tensors on CUDA; on CPU the process's
    resident set (Linux VmHWM, which `reset` clears through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "allocated" if device.type == "cuda" else "RSS"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current resident size
        except OSError:
            self.kind = "RSS, process lifetime"  # no reset here: the peak of the whole process

    def read_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if platform.system() == "Darwin" else peak / 1024
