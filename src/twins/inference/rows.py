"""The files `twins predict --out` writes: one row per image, `.jsonl`, `.csv` or `.parquet`.

A row is a JSON object: `image`, the task's columns (a classifier's `top`, a segmenter's
`label_map` and `counts`, a detector's `boxes`, `labels`, `scores`, ...), or `image` and
`error` for an image that could not be read. JSONL holds it as it is; CSV and Parquet hold one
column per key (`image`, the task's columns, `error`), each a string: text as it is, lists and
objects as JSON text, empty (null) where a row has no value.

JSONL and CSV rows are appended and flushed one by one; a write cut short leaves at most a
partial last line, cut off (`repair`) before the file is continued. Parquet cannot be
appended: rows are written as small complete part files (`OUT.parts/`, each written whole,
every `PART_ROWS` rows or `PART_SECONDS` seconds), joined into `OUT` at the end (written
whole, `twins.atomic`) and removed. Under torchrun each process writes its own part, which the
first process joins into `OUT` at the end (`merge`), skipping rows `OUT` already holds, so a
merge cut short is finished by the next run.

`OUT.twins.json` (the sidecar, `twins.inference.owner`) records the model that wrote `OUT`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twins.atomic import atomic_path
from twins.errors import TwinsError

EXTENSIONS = (".jsonl", ".csv", ".parquet")
PART_ROWS = 1000
PART_SECONDS = 30.0
PARTS_SUFFIX = ".parts"


def check_out(out: str | os.PathLike) -> Path:
    """`out` as a path, refused in one line where its extension names no row format."""
    path = Path(out).expanduser()
    if path.suffix.lower() not in EXTENSIONS:
        raise TwinsError(
            f"--out {out}: rows are written as {', '.join(EXTENSIONS)} files, not "
            f"{path.suffix or 'files without an extension'}: name it "
            f"{path.with_suffix('.jsonl')} (or .csv, .parquet)",
            argument="out",
        )
    if path.is_dir():
        raise TwinsError(f"--out {out} is a folder: name a file in it", argument="out")
    return path


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + PARTS_SUFFIX)


def part_name(out: Path, rank: int) -> Path:
    """A process's own part of a JSONL or CSV file under torchrun."""
    return parts_folder(out) / f"rank-{rank:05d}{out.suffix.lower()}"


def columns_of(task_columns: Sequence[str]) -> list[str]:
    return ["image", *task_columns, "error"]


def as_cell(value: Any) -> str | None:
    """A row value as a CSV or Parquet cell: text as it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """The row with arrays (a label map held in memory) left out: rows in files name files."""
    return {key: value for key, value in row.items() if not hasattr(value, "__array__")}


# --- reading ------------------------------------------------------------------------------


def repair(path: Path) -> None:
    """Cut a JSONL or CSV file after its last complete line (a write cut short)."""
    if not path.is_file():
        return
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        step, end = min(size, 65536), size
        while end > 0:
            file.seek(end - step)
            block = file.read(step)
            last = block.rfind(b"\n")
            if last >= 0:
                keep = end - step + last + 1
                break
            end -= step
            step = min(step, end)
        else:
            keep = 0
        if keep < size:
            file.truncate(keep)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a file this module wrote (complete lines only), as text cells for CSV and
    Parquet, as objects for JSONL."""
    if not path.is_file():
        return []
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]  # a partial last line is no row yet
    if suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise TwinsError(
                f"{path} line {number} is not JSON ({error.msg}): it was not written by twins "
                "predict; pass --overwrite or choose another --out",
                argument="out",
            ) from error
    return rows


def parquet_parts(out: Path) -> list[Path]:
    folder = parts_folder(out)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def done_images(out: Path) -> set[str]:
    """The images `out` and its parts already hold a row of."""
    sources = [out, *parquet_parts(out)]
    folder = parts_folder(out)
    if folder.is_dir():
        sources += sorted(folder.glob(f"rank-*{out.suffix.lower()}"))
    return {str(row["image"]) for source in sources for row in read_rows(source)}


# --- writing ------------------------------------------------------------------------------


class TextRows:
    """Rows appended to a JSONL or CSV file, each flushed as it is written."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, list(columns)
        self.csv = path.suffix.lower() == ".csv"
        repair(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.is_file() or path.stat().st_size == 0
        # Open for the writer's life: rows are appended one by one until close().
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if self.csv:
            self.writer = csv.DictWriter(self.file, self.columns, lineterminator="\n")
            if new:
                self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        row = json_safe(row)
        if self.csv:
            self.writer.writerow({key: as_cell(row.get(key)) for key in self.columns})
        else:
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class ParquetRows:
    """Rows gathered into small Parquet part files, each written whole."""

    def __init__(self, out: Path, columns: Sequence[str], rank: int) -> None:
        self.folder, self.columns, self.prefix = (
            parts_folder(out),
            list(columns),
            f"rank-{rank:05d}",
        )
        taken = [
            int(p.stem.rsplit("-", 1)[1]) for p in self.folder.glob(f"{self.prefix}-*.parquet")
        ]
        self.number = max(taken, default=-1) + 1
        self.rows: list[dict[str, str | None]] = []
        self.since = time.monotonic()

    def write(self, row: dict[str, Any]) -> None:
        row = json_safe(row)
        self.rows.append({key: as_cell(row.get(key)) for key in self.columns})
        if len(self.rows) >= PART_ROWS or time.monotonic() - self.since > PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            write_parquet(
                self.folder / f"{self.prefix}-{self.number:06d}.parquet", self.rows, self.columns
            )
            self.number += 1
            self.rows = []
        self.since = time.monotonic()

    def close(self) -> None:
        self.flush()


def write_parquet(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in columns])
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def open_rows(out: Path, columns: Sequence[str], rank: int, world_size: int) -> Any:
    """This process's writer: `out` itself for one JSONL or CSV writer, else its part."""
    if out.suffix.lower() == ".parquet":
        return ParquetRows(out, columns, rank)
    return TextRows(out if world_size == 1 else part_name(out, rank), columns)


def merge(out: Path, columns: Sequence[str]) -> None:
    """Join the parts into `out` (rows it already holds skipped) and remove them."""
    folder = parts_folder(out)
    if not folder.is_dir():
        return
    held = {str(row["image"]) for row in read_rows(out)}
    if out.suffix.lower() == ".parquet":
        rows = read_rows(out)
        for part in parquet_parts(out):
            rows += [row for row in read_rows(part) if row["image"] not in held]
            held |= {row["image"] for row in rows}
        write_parquet(out, rows, columns)
    else:
        parts = sorted(folder.glob(f"rank-*{out.suffix.lower()}"))
        writer = TextRows(out, columns)
        for part in parts:
            for row in read_rows(part):
                if str(row["image"]) not in held:
                    held.add(str(row["image"]))
                    writer.write(row)
        writer.close()
    shutil.rmtree(folder, ignore_errors=True)
