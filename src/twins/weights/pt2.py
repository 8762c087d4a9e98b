"""`.pt2` programs (`torch.export.save`, as `twins export` writes them): their parameters in the
official layout (a program keeps the module's parameter names) and the metadata in the extra
file `twins_metadata.json`.

Read from the archive directly rather than by `torch.export.load`, which unpickles some entries
with `weights_only=False`: the weights config (JSON) names each tensor's raw-bytes file, dtype,
sizes and strides, and an entry stored as a pickle is refused.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import torch

from twins.errors import TwinsError
from twins.weights.state_dict import METADATA_KEYS, StateDict

# The extra file (`torch.export.save(extra_files=...)`) holding the metadata as JSON.
METADATA_FILE = "twins_metadata.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
# torch.export's serialised dtype numbers (torch._export.serde.schema.ScalarType) of the types
# a Twins model holds: floating point, and int64 for BatchNorm's `num_batches_tracked` (the
# dense models' heads).
DTYPES = {5: torch.int64, 6: torch.float16, 7: torch.float32, 8: torch.float64}
DTYPES |= {13: torch.bfloat16}


def _archive_name(archive: zipfile.ZipFile, name: str) -> str | None:
    """The member `name` under the archive's top folder, None when absent."""
    return next((n for n in archive.namelist() if n.split("/", 1)[-1] == name), None)


def is_pt2(path: str | os.PathLike) -> bool:
    """Whether `path` is a `torch.export.save` archive (its `archive_format` says "pt2")."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        member = _archive_name(archive, "archive_format")
        return member is not None and archive.read(member).strip() == b"pt2"


def pt2_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata a `.pt2` written by `twins export` carries (empty when it has none)."""
    with zipfile.ZipFile(path) as archive:
        member = _archive_name(archive, f"extra/{METADATA_FILE}")
        written = json.loads(archive.read(member)) if member else {}
    return {key: written[key] for key in METADATA_KEYS if written.get(key) is not None}


def read_pt2(path: str | os.PathLike) -> StateDict:
    """The parameters and buffers of a `.pt2` program, with its metadata."""
    with zipfile.ZipFile(path) as archive:
        member = _archive_name(archive, WEIGHTS_CONFIG)
        if member is None:
            raise TwinsError(f"{path}: a .pt2 archive without {WEIGHTS_CONFIG}; export it again")
        folder = member.removesuffix(WEIGHTS_CONFIG)
        config = json.loads(archive.read(member))["config"]
        tensors = {
            name: _tensor(archive, folder, name, entry, path) for name, entry in config.items()
        }
    return StateDict(tensors, {"format": "pt2", **pt2_metadata(path)})


def _tensor(
    archive: zipfile.ZipFile, folder: str, name: str, entry: dict, path: str | os.PathLike
) -> torch.Tensor:
    meta = entry.get("tensor_meta") or {}
    dtype = DTYPES.get(meta.get("dtype"))
    if entry.get("use_pickle") or dtype is None:
        how = "as a pickle" if entry.get("use_pickle") else f"in type {meta.get('dtype')}"
        raise TwinsError(
            f"{path}: weight {name} is stored {how}, which no Twins model holds, so twins export "
            "did not write this program: load the weights it was exported from"
        )
    content = bytearray(archive.read(f"{folder}data/weights/{entry['path_name']}"))
    flat = torch.frombuffer(content, dtype=dtype) if content else torch.empty(0, dtype=dtype)
    try:  # as_strided checks that the sizes and strides stay within the bytes
        return torch.as_strided(
            flat,
            [size["as_int"] for size in meta["sizes"]],
            [stride["as_int"] for stride in meta["strides"]],
            meta["storage_offset"]["as_int"],
        ).clone()
    except (RuntimeError, KeyError, TypeError) as error:
        raise TwinsError(f"{path}: weight {name} is damaged ({error}); export it again") from error
