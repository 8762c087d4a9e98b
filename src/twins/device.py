"""The one place a device name becomes a `torch.device`, with one-line errors for names that
cannot work here.

Accepted: "auto" (the GPU when there is one, else the CPU), "cpu", "cuda", "cuda:N", and the
seed's `device_target` names "GPU", "CPU" and "Ascend" (which runs like "auto").
"""

from __future__ import annotations

import torch

from twins.errors import TwinsError

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`name` as a device of this machine; `local_rank` picks the GPU of a process under
    torchrun when `name` does not say which."""
    key = str(name).strip().lower()
    key = {"gpu": "cuda", "ascend": "auto"}.get(key, key)
    if key == "auto":
        key = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(key)
    except RuntimeError as error:
        raise TwinsError(
            f"unknown device {name!r}: use one of {', '.join(DEVICE_NAMES)}", argument="device"
        ) from error
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise TwinsError(
            f"device {name!r} is not supported: use one of {', '.join(DEVICE_NAMES)}",
            argument="device",
        )
    if not torch.cuda.is_available():
        raise TwinsError(
            f"device {name!r} asks for a CUDA GPU but this torch sees none: use cpu or auto",
            argument="device",
        )
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else local_rank % count
    if index >= count:
        raise TwinsError(
            f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}",
            argument="device",
        )
    return torch.device("cuda", index)
