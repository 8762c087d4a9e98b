"""Processes working together: set-up from torchrun's variables, reductions, and samplers.

Under `torchrun` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) the
process group is started with NCCL on GPUs and gloo on CPUs; without it everything here is a
no-op for one process. Only rank 0 writes files and prints. The training order is
`twins.train.sampler.ResumableSampler`; evaluation shards are `ShardSampler` below.
A decision that stops the run is made on all-reduced values, so every process stops at the same
point and none is left waiting in a collective (on several nodes, torchrun does not stop the
workers of the other nodes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from twins.data.counted import judge_health
from twins.device import select_device


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0, or a process not started by torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_target: str) -> DistContext:
    """Join the process group when launched by torchrun; pick this process's device."""
    if not launched_by_torchrun():
        return DistContext(0, 1, 0, select_device(device_target))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(device_target, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    global _control_group
    # Small decisions (stop now?) go over gloo on the CPU: asking them over NCCL every step
    # would make the host wait for the GPU.
    _control_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


_control_group = None


def max_over_processes(value: int) -> int:
    """The largest `value` of all processes (a collective); `value` itself when alone."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_control_group)
    return int(tensor.item())


def restart_notice() -> str | None:
    """A warning for `torchrun --max-restarts` with a rendezvous store shared across restarts:
    a restarted group can then read the previous group's addresses and fail to connect or hang
    (pytorch/pytorch#135712). Exporting TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 avoids it."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return (
            "notice: torchrun shares its rendezvous store across restarts, which can keep a "
            "restarted group from connecting; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "before torchrun (see docs/distributed.md)"
        )
    return None


def world_size() -> int:
    """Processes in the running group (1 when alone)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the running group (0 when alone)."""
    return dist.get_rank() if dist.is_initialized() else 0


def cleanup() -> None:
    global _control_group
    _control_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over all processes, in place; the tensor itself when alone."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def check_health_together(dataset: Any, device: torch.device) -> None:
    """Raise TwinsError in every process when most images of `dataset` (a SafeImageFolder or ShardDataset) read
    so far by all processes together were unreadable. A collective: every process must call it
    at the same point (all reach the same optimizer steps; an evaluation pass ends together)."""
    counts = torch.tensor([dataset.tried, dataset.skipped], dtype=torch.float64)
    tried, skipped = all_reduce_sum(counts.to(device)).tolist()
    judge_health(int(tried), int(skipped), len(dataset), dataset.root)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_rows(row: torch.Tensor) -> torch.Tensor:
    """Every process's `row` (same shape everywhere), stacked by rank: (world_size, *row.shape).
    On NCCL the row must be on this process's GPU."""
    if not dist.is_initialized():
        return row[None].clone()
    rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, row.contiguous())
    return torch.stack(rows)


class ShardSampler(Sampler[int]):
    """Every index exactly once across the processes: rank r takes r, r + world, r + 2 world, ...

    torch's DistributedSampler pads the last shard with repeated images so that all shards have
    the same length; counted in an evaluation they would bias it. Shards here may differ by one
    image, which evaluation allows since it synchronises only once, at the end.
    """

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.rank, self.world_size = len(dataset), rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))
