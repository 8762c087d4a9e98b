"""The history rows in W&B's local run files (`run-<id>.wandb`), which a run writes online and
offline. The file is W&B's record log: a 7-byte header (":W&B", 0xBEE1, version 0), then
32 KiB blocks of records, each a 7-byte header (CRC-32 of type and data, length, type:
1 whole, 2 first, 3 middle, 4 last part) and its data, a `wandb_internal_pb2.Record`. A
record cut short by a kill, or whose checksum fails, ends the reading."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7
_WHOLE, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[bytes]:
    """The data of each complete record of a .wandb file."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return
    position, parts = _HEADER, b""
    while position + _HEADER <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + _HEADER])
        body = data[position + _HEADER : position + _HEADER + length]
        position += _HEADER + length
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) != checksum:
            return
        if kind == _WHOLE:
            yield body
        elif kind == _FIRST:
            parts = body
        elif kind == _MIDDLE:
            parts += body
        elif kind == _LAST:
            yield parts + body


def history(path: str | Path) -> list[dict[str, Any]]:
    """The history rows of a .wandb file (each with its `_step`), in the order written."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def run_files(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """The local files of the run `run_id` under `wandb_dir` (its `wandb/` folder), oldest
    first: one per start of the run (a resume starts a new one)."""
    return sorted(Path(wandb_dir).glob(f"wandb/*-{run_id}/run-{run_id}.wandb"))
