"""The rows of a Parquet image set as images to predict (`twins predict SET --out FILE`): every
file of every split, the test split's too (its labels, often -1, are not read), each row named
`<file> row N (<image path>)` (the Hub's paths are file names only, which repeat across
classes: the file and row keep every name one row's, for a rerun to skip), its bytes read a row
group at a time as the rows are taken in order."""

from __future__ import annotations

import threading
from typing import Any

from twins import storage
from twins.data.parquet.layout import DATA, check_image_column, find_files, open_parquet_file


class RowGroupImages:
    """The `image.bytes` of one Parquet file's rows, holding the last row group read (rows
    taken in order read each row group once)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.file = open_parquet_file(location, storage.size(location))
        check_image_column(storage.display(location), self.file.schema_arrow)
        self._lock = threading.Lock()
        self._group: tuple[int, Any] | None = None

    def paths(self) -> list[list[str | None]]:
        """Each row group's `image.path` values (None where a row has none)."""
        has_path = self.file.schema_arrow.field("image").type.get_field_index("path") >= 0
        groups = []
        for group in range(self.file.metadata.num_row_groups):
            if has_path:
                column = self.file.read_row_group(group, columns=["image.path"]).column("image")
                groups.append(column.combine_chunks().field("path").to_pylist())
            else:
                groups.append([None] * self.file.metadata.row_group(group).num_rows)
        return groups

    def image(self, group: int, row: int) -> bytes:
        with self._lock:
            if self._group is None or self._group[0] != group:
                table = self.file.read_row_group(group, columns=["image.bytes"])
                self._group = (group, table.column("image").combine_chunks().field("bytes"))
            data = self._group[1][row].as_py()
        if not data:
            raise ValueError("the row holds no image bytes")
        return data


def parquet_rows(url: str) -> list[tuple[str, Any]]:
    """(name, a function giving the image's bytes) of every row of the Parquet set at `url`."""
    rows = []
    for _, names in sorted(find_files(url).items()):
        for name in names:
            images = RowGroupImages(storage.join(url, DATA, name))
            number = 0
            for group, paths in enumerate(images.paths()):
                for row, path in enumerate(paths):
                    label = f"{name} row {number}" + (f" ({path})" if path else "")
                    rows.append((label, _Reader(images, group, row)))
                    number += 1
    return rows


class _Reader:
    def __init__(self, images: RowGroupImages, group: int, row: int) -> None:
        self.images, self.group, self.row = images, group, row

    def __call__(self) -> bytes:
        return self.images.image(self.group, self.row)
