"""`twins pack` from a Parquet set in the Hub's layout (`twins.data.parquet.layout`): the plan of
the shards and the reading of their rows.

Parquet is read a row group at a time, so the shuffle across classes that `twins pack` gives
an ImageFolder is taken here in two steps that read every row group once: the row groups of a
split are permuted with the seed and cut into shards of about `shard_size` bytes (from the
row groups' sizes in the footer), and the rows of each shard are permuted among themselves.
A member's source is (file, row group, row); the name recorded in the index is
`data/<file>:<row>`, and the manifest says `"source_format": "parquet"`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from twins import storage
from twins.data.packed import format as packed
from twins.data.parquet.layout import DATA, read_layout
from twins.seeds import derive_seed

# The image member's extension from the bytes' first ones, when the row's path has none.
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".webp"), (b"GIF8", ".gif"))


def plan_parquet(
    source: str, shard_size: int, seed: int, resize_short: int | None = None
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """The classes, and for each split its shard tasks (name, members [key, (file, group,
    row), class, name], inputs, parquet: the set's URL)."""
    from twins.data.parquet.layout import open_parquet_file

    layout = read_layout(source, packed.SPLITS)
    plans = {}
    for number, split in enumerate(packed.SPLITS):
        groups = []  # (file, group, first row in the file, rows, bytes)
        for info in layout.splits[split]:
            metadata = open_parquet_file(storage.join(source, DATA, info.name), info.bytes).metadata
            first = 0
            for group, rows in enumerate(info.row_groups):
                nbytes = metadata.row_group(group).total_byte_size
                groups.append((info, group, first, rows, nbytes))
                first += rows
        generator = torch.Generator().manual_seed(derive_seed(seed, number))
        order = torch.randperm(len(groups), generator=generator).tolist()
        shards: list[list[Any]] = [[]]
        filled = 0
        for index in order:
            info, group, first, rows, nbytes = groups[index]
            if shards[-1] and filled + nbytes > shard_size:
                shards.append([])
                filled = 0
            shards[-1].append((info, group, first, rows))
            filled += nbytes + 3 * packed.BLOCK * rows
        plans[split] = []
        position = 0
        for shard_number, parts in enumerate(s for s in shards if s):
            rows = [
                (info.name, group, row, first + row, int(info.labels[first + row]))
                for info, group, first, count in parts
                for row in range(count)
            ]
            generator = torch.Generator().manual_seed(derive_seed(seed, number, shard_number))
            rows = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            members = []
            for name, group, row, file_row, target in rows:
                key = packed.sample_key(split, position)
                members.append([key, [name, group, row], target, f"{DATA}/{name}:{file_row}"])
                position += 1
            sizes = {info.name: info.bytes for info, *_ in parts}
            described = [[m[0], m[1], m[2], sizes[m[1][0]]] for m in members]
            inputs = hashlib.sha256(
                json.dumps([packed.VERSION, resize_short, described]).encode()
            ).hexdigest()
            name = packed.shard_name(split, shard_number)
            plans[split].append(
                {"name": name, "members": members, "inputs": inputs, "parquet": source}
            )
    return layout.classes, plans


class RowReader:
    """The image bytes (and file name) of rows of the Parquet set at `url`, for one shard: the
    row groups it reads are kept (a shard's members are its row groups' rows, permuted, so
    about `--shard-size` bytes) and each is read once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._files: dict[str, Any] = {}
        self._groups: dict[tuple[str, int], Any] = {}

    def read(self, name: str, group: int, row: int) -> tuple[bytes | None, str | None]:
        from twins.data.parquet.layout import open_parquet_file

        images = self._groups.get((name, group))
        if images is None:
            if name not in self._files:
                location = storage.join(self.url, DATA, name)
                self._files[name] = open_parquet_file(location, storage.size(location))
            table = self._files[name].read_row_group(group, columns=["image"])
            images = self._groups[(name, group)] = table.column("image").combine_chunks()
        has_path = images.type.get_field_index("path") >= 0
        path = images.field("path")[row].as_py() if has_path else None
        return images.field("bytes")[row].as_py(), path


def image_extension(data: bytes | None, path: str | None) -> str:
    """The image member's extension: the row's path's (`.jpeg` as `.jpg`), else the one its
    bytes begin as, else `.jpg`."""
    if path and "." in path.rsplit("/", 1)[-1]:
        extension = "." + path.rsplit(".", 1)[-1].lower()
        if extension[1:].isalnum():
            return ".jpg" if extension == ".jpeg" else extension
    for magic, extension in _MAGIC:
        if data and data.startswith(magic):
            return extension
    return ".jpg"
