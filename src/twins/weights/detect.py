"""Which kind of weights file a path holds, judged by its first bytes rather than its name."""

from __future__ import annotations

import os
from pathlib import Path

from twins.errors import TwinsError

FORMATS = ("safetensors", "torch", "mindspore")


def detect_format(path: str | os.PathLike) -> str:
    """The file's kind: "safetensors", "torch" (torch.save zip or legacy pickle) or "mindspore"."""
    path = Path(path)
    if not path.is_file():
        raise TwinsError(f"{path}: no such file; check the path")
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(16)
    if size == 0:
        raise TwinsError(f"{path}: the file is empty")
    # safetensors: 8-byte little-endian header length, then a JSON object.
    header_bytes = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) > 8 and head[8:9] == b"{" and 8 + header_bytes <= size:
        return "safetensors"
    # torch.save: a zip archive (since torch 1.6) or a bare pickle (protocol 2+) before that.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    # MindSpore: protobuf `Checkpoint`, whose first byte is field 1 (value), length-delimited.
    if head[:1] == b"\x0a":
        return "mindspore"
    raise TwinsError(
        f"{path}: not a weights file this toolkit reads; expected safetensors, a PyTorch "
        ".pth/.pt (torch.save) or a MindSpore .ckpt"
    )
