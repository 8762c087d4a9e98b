"""The images a command names, as (name, reader) items read only when predicted: files,
folders (searched recursively), glob patterns, `@list.txt` (a text file of such inputs, one a
line), object-store prefixes and files (`s3://bucket/prefix`, through `twins.storage`), and
packed data sets (`twins pack`'s shards: every split's samples, named `<split>/<source path>`)
and Parquet image sets in the Hub's layout (every row, `twins.data.parquet.listing`).

Each kind of data set is one lister in `DATA_SETS`, asked in turn whether an input is one of
its sets.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twins import storage
from twins.data.images import IMAGE_EXTENSIONS, find_images
from twins.data.packed import format as packed
from twins.data.parquet.layout import is_parquet_set
from twins.data.parquet.listing import parquet_rows
from twins.errors import TwinsError

LIST_PREFIX = "@"


@dataclass(frozen=True)
class ImageItem:
    name: str  # the image's path, URL or data-set name: what the prediction rows call it
    read: Callable[[], bytes]  # the file's bytes


def packed_items(url: str) -> list[ImageItem]:
    """Every sample of the packed data set at `url`, split by split, in packed order."""
    manifest = packed.read_manifest(url)
    items = []
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            location = storage.join(url, shard["name"])
            index = packed.read_json(
                storage.join(url, shard.get("index") or packed.index_name(shard["name"]))
            )
            for key, _, offset, size, _, source in index["members"]:
                read = functools.partial(storage.read_bytes, location, offset, offset + size)
                items.append(ImageItem(f"{split}/{source or key}", read))
    return items


def parquet_items(url: str) -> list[ImageItem]:
    """Every row of the Parquet image set at `url`, split by split, file by file."""
    return [ImageItem(name, read) for name, read in parquet_rows(url)]


# (whether an input is a data set of this kind, its items).
DATA_SETS: list[tuple[Callable[[str], bool], Callable[[str], list[ImageItem]]]] = [
    (packed.is_packed, packed_items),
    (is_parquet_set, parquet_items),
]


def _remote_items(url: str) -> tuple[list[ImageItem], str | None]:
    if storage.is_dir(url):
        names = [name for name in storage.list_files(url) if _is_image_name(name)]
        found = [_file_item(storage.join(url, name)) for name in sorted(names)]
        return found, None if found else "prefix holds no images"
    if storage.exists(url):
        return [_file_item(url)], None
    return [], "no such object or prefix"


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _file_item(location: str | Path) -> ImageItem:
    return ImageItem(str(location), functools.partial(storage.read_bytes, str(location)))


def _list_file(entry: str) -> list[str]:
    location = entry[len(LIST_PREFIX) :]
    try:
        text = storage.read_bytes(location).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TwinsError(
            f"{entry}: cannot read the list of images ({error}); name a text file of paths, "
            "one a line",
            argument="inputs",
        ) from error
    base = os.path.dirname(location)
    lines = [line.strip() for line in text.splitlines()]
    # Relative entries are relative to the list's folder, as in a playlist.
    return [
        line if storage.is_remote(line) or os.path.isabs(line) else os.path.join(base, line)
        for line in lines
        if line and not line.startswith("#")
    ]


def expand_lists(inputs: Sequence[str]) -> list[str]:
    """`inputs` with each `@list.txt` replaced by the inputs it lists."""
    expanded: list[str] = []
    for entry in map(str, inputs):
        listed = entry.startswith(LIST_PREFIX)
        expanded += expand_lists(_list_file(entry)) if listed else [entry]
    return expanded


def list_images(inputs: Sequence[str]) -> tuple[list[ImageItem], list[tuple[str, str]]]:
    """The images `inputs` name, each once, and the inputs that named none, with why."""
    items: list[ImageItem] = []
    missing: list[tuple[str, str]] = []
    for entry in expand_lists(inputs):
        data_set = next((lister for accepts, lister in DATA_SETS if accepts(entry)), None)
        if data_set is not None:
            items += data_set(entry)
        elif storage.is_remote(entry):
            found, reason = _remote_items(entry)
            items += found
            missing += [(entry, reason)] if reason else []
        else:
            paths, left = find_images([entry])
            items += [_file_item(path) for path in paths]
            missing += left
    unique = {item.name: item for item in items}
    return list(unique.values()), missing
