"""What the hardware can do: device names and the matmul peak a share is taken of (peak memory,
what a run used, is `twins.memory`).

Peak on CPU: a square matmul in the benchmark's precision, measured in the same process with the
same threads, so "share of peak" compares the model with the best this machine does right now.
Peak on GPU: the datasheet's dense tensor-core figure for the precision (no sparsity); a GPU
missing from the table is measured like a CPU.
"""

from __future__ import annotations

import time

import torch

from twins.environment import cpu_model

# Dense TFLOP/s from the vendors' datasheets, by a part of the device name (first match wins,
# so longer names come first). fp32 is the non-tensor-core figure: PyTorch's default matmul
# precision does not use TF32.
DATASHEET_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100 NVL": {"bf16": 835.0, "fp16": 835.0, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},  # SXM
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6},
    "V100": {"fp16": 125.0, "fp32": 15.7},
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# The vector and matrix extensions that decide which kernels oneDNN and torch run on a CPU (as
# /proc/cpuinfo names them), in the order a reader compares them.
VECTOR_EXTENSIONS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_description() -> dict[str, object]:
    """The CPU's model, the extensions of VECTOR_EXTENSIONS it has, and the kernel level torch
    dispatches to on it: every table prints them, so no figure is read without its machine."""
    flags = _cpu_flags()
    return {
        "model": cpu_model(),
        "extensions": [name for name in VECTOR_EXTENSIONS if name in flags],
        "torch_kernels": torch.backends.cpu.get_cpu_capability(),
    }


def describe_cpu(cpu: dict[str, object]) -> str:
    extensions = ", ".join(cpu["extensions"]) or "no vector extensions listed"
    return f"CPU: {cpu['model']} ({extensions}; torch kernels {cpu['torch_kernels']})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, where the figure comes from) for `precision` on `device`."""
    if device.type == "cuda":
        name = device_name(device)
        for key, figures in DATASHEET_TFLOPS.items():
            if key in name:
                if precision not in figures:
                    return None, f"no {precision} tensor cores on {key}"
                return figures[precision], f"datasheet, {key} {precision} dense"
    return measure_matmul_tflops(device, precision), f"{precision} matmul measured in this run"


def measure_matmul_tflops(device: torch.device, precision: str, repeats: int = 5) -> float:
    """Best TFLOP/s of a square matmul over a few repeats."""
    size = 2048 if device.type == "cpu" else 8192
    a = torch.randn(size, size, device=device).to(DTYPES[precision])
    b = torch.randn(size, size, device=device).to(DTYPES[precision])
    a @ b  # warm up: kernel selection, first-touch of the output
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12
