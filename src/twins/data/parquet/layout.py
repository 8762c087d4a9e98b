"""A Parquet image data set in the Hugging Face Hub's layout, found and checked at start.

The layout (what `datasets` writes and the Hub serves): `data/<split>-*.parquet`, the split
`train`, `validation` (also `val`) or `test`, e.g. `data/train-00000-of-00294.parquet`. Each
file has an `image` column, a struct of `bytes` (the image file's bytes) and `path`, and an
integer `label` column; `datasets` records the class names in the schema's metadata, key
`huggingface`: `{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}`.
Class names come from that ClassLabel, else from a `classes.json` (a list of names, in label
order) beside `data/`, else they are the label integers.

Everything the reader needs of a file is read here once: its size, rows per row group and
labels (the `label` column only; from a store in byte ranges, not the whole object).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from twins import storage
from twins.data.packed.format import CLASSES_FILE, read_classes_file
from twins.data.parquet.remote_file import RangeFile
from twins.errors import TwinsError
from twins.notes import note

DATA = "data"
# The file name's split word -> the split it is read as.
SPLIT_OF = {"train": "train", "validation": "val", "val": "val", "test": "test"}
HUB_NAME = {"train": "train", "val": "validation", "test": "test"}
_FILE = re.compile(r"^(train|validation|val|test)-[^/]*\.parquet$")


@dataclass(frozen=True)
class ParquetFileInfo:
    """One file of the set: its name in `data/`, size, rows per row group, labels, and the
    class names its ClassLabel gives (None without one)."""

    name: str
    bytes: int
    row_groups: tuple[int, ...]
    labels: np.ndarray
    class_names: tuple[str, ...] | None


@dataclass(frozen=True)
class ParquetSet:
    """The splits read (split -> its files, sorted by name) and the class names."""

    url: str
    splits: dict[str, list[ParquetFileInfo]]
    classes: list[str]


def find_files(url: str) -> dict[str, list[str]]:
    """The Parquet files of each split in `url/data/` (split -> sorted names); empty when
    there are none."""
    try:
        names = storage.list_dir(storage.join(url, DATA))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found: dict[str, list[str]] = {}
    for name in names:
        match = _FILE.match(name)
        if match:
            found.setdefault(SPLIT_OF[match.group(1)], []).append(name)
    return found


def is_parquet_set(url: str) -> bool:
    """Whether `url` holds a Parquet set in the Hub's layout."""
    try:
        return bool(find_files(url))
    except TwinsError:  # storage's line (credentials, bucket, endpoint)
        raise
    except Exception:
        return False


def open_parquet_file(location: str, size: int) -> Any:
    """A `pyarrow.parquet.ParquetFile` of the file at `location` (local, or read in byte
    ranges from a store)."""
    import pyarrow.parquet as pq

    if storage.is_remote(location):
        return pq.ParquetFile(RangeFile(location, size))
    return pq.ParquetFile(storage.local_path(location))


def read_layout(url: str, splits: tuple[str, ...] = ("train", "val")) -> ParquetSet:
    """The splits `splits` of the Parquet set at `url`, every file checked: an `image`
    column of bytes, integer labels, all within the classes."""
    shown = storage.display(url)
    found = find_files(url)
    for split in splits:
        if split not in found:
            present = ", ".join(f"{HUB_NAME[s]}-*" for s in sorted(found)) or "none"
            raise TwinsError(
                f"{shown} holds no {DATA}/{HUB_NAME[split]}-*.parquet (found: {present}): add "
                f"the {split} split's files as the Hub names them "
                f"({DATA}/{HUB_NAME[split]}-00000-of-00001.parquet)",
                argument="data_url",
            )
    if "test" in found and "test" not in splits:
        note(
            f"{shown}: {len(found['test'])} {DATA}/test-*.parquet files are not read (training "
            "and evaluation read train and validation)"
        )
    from twins.data.packed.reader import in_threads

    def read(name: str) -> ParquetFileInfo:
        return read_file_info(url, name)

    names = [(split, name) for split in splits for name in found[split]]
    if storage.is_remote(url):
        infos = in_threads(read, [name for _, name in names])
    else:
        infos = [read(name) for _, name in names]
    chosen = {
        split: [i for (s, _), i in zip(names, infos, strict=True) if s == split] for split in splits
    }
    classes = _classes(url, [i for i in infos])
    for info in infos:
        _check_labels(url, info, classes)
    return ParquetSet(url, chosen, classes)


def check_image_column(shown: str, schema: Any) -> None:
    """TwinsError unless `schema` (a pyarrow schema) has the Hub's `image` struct of bytes."""
    import pyarrow as pa

    image = schema.field("image") if "image" in schema.names else None
    if (
        image is None
        or not pa.types.is_struct(image.type)
        or image.type.get_field_index("bytes") < 0
        or not pa.types.is_binary(image.type.field("bytes").type)
        and not pa.types.is_large_binary(image.type.field("bytes").type)
    ):
        raise TwinsError(
            f"{shown} has no `image` column of image bytes (its columns: "
            f"{', '.join(schema.names)}): a Parquet image set holds each image in an `image` "
            "struct of `bytes` and `path`, as `datasets` writes it "
            "(`Dataset.cast_column('image', Image())` then `to_parquet`)"
        )


def read_file_info(url: str, name: str) -> ParquetFileInfo:
    """What the reader needs of `url/data/name`, its columns checked."""
    import pyarrow as pa

    location = storage.join(url, DATA, name)
    shown = storage.display(location)
    size = storage.size(location)
    try:
        file = open_parquet_file(location, size)
    except (pa.ArrowInvalid, OSError) as error:
        raise TwinsError(
            f"{shown} is not a readable Parquet file ({str(error).splitlines()[0]}): download "
            "it again"
        ) from error
    schema = file.schema_arrow
    columns = ", ".join(schema.names)
    check_image_column(shown, schema)
    if "label" not in schema.names or not pa.types.is_integer(schema.field("label").type):
        raise TwinsError(
            f"{shown} has no integer `label` column (its columns: {columns}): name the class "
            "column `label`, holding class indices (a `datasets` ClassLabel)"
        )
    labels = file.read(columns=["label"]).column("label")
    if labels.null_count:
        row = int(np.flatnonzero(labels.is_null().to_numpy(zero_copy_only=False))[0])
        raise TwinsError(
            f"{shown} has {labels.null_count} rows without a label (the first: row {row}): "
            "label them or remove them"
        )
    metadata = file.metadata
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return ParquetFileInfo(
        name,
        size,
        groups,
        labels.to_numpy(zero_copy_only=False).astype(np.int64),
        _class_label(schema.metadata or {}),
    )


def _class_label(metadata: dict[bytes, bytes]) -> tuple[str, ...] | None:
    """The names of the `label` column's ClassLabel in `datasets`' schema metadata."""
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        label = features["label"]
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(label, dict) or label.get("_type") != "ClassLabel":
        return None
    names = label.get("names")
    return tuple(str(n) for n in names) if isinstance(names, list) and names else None


def _classes(url: str, infos: list[ParquetFileInfo]) -> list[str]:
    named = [info for info in infos if info.class_names is not None]
    shown = storage.display(url)
    for info in named[1:]:
        if info.class_names != named[0].class_names:
            raise TwinsError(
                f"the ClassLabel of {DATA}/{info.name} in {shown} names other classes than "
                f"that of {DATA}/{named[0].name}: the files belong to different data sets; "
                "keep the files of one"
            )
    if named:
        return list(named[0].class_names or ())
    names = read_classes_file(url)
    if names is not None:
        return names
    count = max((int(i.labels.max()) + 1 for i in infos if len(i.labels)), default=0)
    note(
        f"{shown} names no classes (no ClassLabel in its schema, no {CLASSES_FILE}): the "
        f"classes are the labels 0..{count - 1}; write {CLASSES_FILE} to name them"
    )
    return [str(i) for i in range(count)]


def _check_labels(url: str, info: ParquetFileInfo, classes: list[str]) -> None:
    bad = np.flatnonzero((info.labels < 0) | (info.labels >= len(classes)))
    if len(bad):
        row = int(bad[0])
        raise TwinsError(
            f"{storage.display(storage.join(url, DATA, info.name))} has label "
            f"{int(info.labels[row])} at row {row} ({len(bad)} rows out of range), outside the "
            f"{len(classes)} classes 0..{len(classes) - 1}: fix those labels, or name every "
            f"class (the ClassLabel, or {CLASSES_FILE})"
        )
