"""The weights file formats: the one table of their names and extensions (each keeps the tensors
and the metadata that describes their model), and which format a file holds, judged by its
first bytes rather than its name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twins.errors import TwinsError
from twins.weights.pt2 import is_pt2


@dataclass(frozen=True)
class WeightsFormat:
    name: str
    suffixes: tuple[str, ...]  # extensions that choose this format when writing
    description: str


FORMATS: dict[str, WeightsFormat] = {
    kind.name: kind
    for kind in (
        WeightsFormat("safetensors", (".safetensors",), "safetensors"),
        WeightsFormat("torch", (".pth", ".pt"), "PyTorch state dict"),
        WeightsFormat("mindspore", (".ckpt",), "MindSpore checkpoint"),
    )
}


def format_for_path(path: str | os.PathLike) -> WeightsFormat:
    """The format a file to write is given by its extension."""
    suffix = Path(path).suffix.lower()
    for kind in FORMATS.values():
        if suffix in kind.suffixes:
            return kind
    known = ", ".join(
        f"{s} ({kind.description})" for kind in FORMATS.values() for s in kind.suffixes
    )
    raise TwinsError(f"{path}: unknown weights extension {suffix or '(none)'!r}; use {known}")


def detect_format(path: str | os.PathLike) -> str:
    """The file's format: "safetensors", "torch" (torch.save zip or legacy pickle), "mindspore"
    or "pt2" (a torch.export program, read for its weights)."""
    path = Path(path)
    if path.is_dir():
        raise TwinsError(
            f"{path} is a folder, not a weights file: give a file in it (e.g. a checkpoints/best.pt)"
        )
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
    # torch.export.save: a zip archive that says it is a pt2 program.
    if head.startswith(b"PK\x03\x04") and is_pt2(path):
        return "pt2"
    # torch.save: a zip archive (since torch 1.6) or a bare pickle (protocol 2+) before that.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    # MindSpore: protobuf `Checkpoint`, whose first byte is field 1 (value), length-delimited.
    if head[:1] == b"\x0a":
        return "mindspore"
    raise TwinsError(
        f"{path}: not a weights file this toolkit reads; expected safetensors, a PyTorch "
        ".pth/.pt (torch.save), a MindSpore .ckpt or a .pt2 program (for an ONNX model, use "
        "the weights it was exported from)"
    )
