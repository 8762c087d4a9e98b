"""A Parquet image set in the Hugging Face Hub's layout, written with pyarrow as `datasets`
writes it: `data/<split>-NNNNN-of-NNNNN.parquet`, an `image` struct of `bytes` and `path`, an
int64 `label`, the class names as a ClassLabel in the schema's `huggingface` metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HUB_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def hub_metadata(classes: list[str] | None) -> dict[bytes, bytes]:
    """The `huggingface` schema metadata of an image set, with a ClassLabel of `classes`
    (a plain int64 feature without)."""
    label = (
        {"names": list(classes), "_type": "ClassLabel"}
        if classes is not None
        else {"dtype": "int64", "_type": "Value"}
    )
    info = {"info": {"features": {"image": {"_type": "Image"}, "label": label}}}
    return {b"huggingface": json.dumps(info).encode()}


def write_parquet_file(
    path: Path,
    rows: list[tuple[bytes | None, str, int]],
    classes: list[str] | None,
    row_group_size: int = 5,
) -> Path:
    """One file of (image bytes, path, label) rows."""
    schema = pa.schema(
        [
            pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            pa.field("label", pa.int64()),
        ],
        metadata=hub_metadata(classes),
    )
    table = pa.table(
        {
            "image": [{"bytes": data, "path": name} for data, name, _ in rows],
            "label": [label for _, _, label in rows],
        },
        schema=schema,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def imagefolder_to_parquet(
    folder: Path,
    output: Path,
    files: dict[str, int] | None = None,
    *,
    class_label: bool = True,
    row_group_size: int = 5,
) -> Path:
    """The ImageFolder at `folder` (`train/`, `val/`) as a Hub Parquet set at `output`, each
    split in `files[split]` files (default 3 and 2), rows in the folder's sorted order."""
    files = files or {"train": 3, "val": 2}
    classes = sorted(p.name for p in (folder / "train").iterdir())
    for split, count in files.items():
        rows = [
            (path.read_bytes(), path.name, index)
            for index, name in enumerate(classes)
            for path in sorted((folder / split / name).iterdir())
        ]
        per_file = -(-len(rows) // count)
        for number in range(count):
            name = f"{HUB_SPLIT[split]}-{number:05d}-of-{count:05d}.parquet"
            part = rows[number * per_file : (number + 1) * per_file]
            write_parquet_file(
                output / "data" / name, part, classes if class_label else None, row_group_size
            )
    return output
