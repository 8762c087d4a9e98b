"""Images labelled by a CSV file: `data_url/train.csv` (and `val.csv`), a header row, then
rows `path,label`; paths relative to the CSV's folder, labels class names or integers.

Classes: with names, the sorted names of `train.csv` (as ImageFolder sorts its class folders);
with integers (every label of `train.csv` an integer), the integers themselves are the class
indices and the names are "0" .. "max". `val.csv` is read with the classes of `train.csv`: a
label it does not know is refused.

A row naming a missing file stops the run at start, in one line naming the CSV, the row and the
fix. It is a mistake in the labels (a typo, a path relative to another folder), not a damaged
image: counted as broken files are, a CSV whose paths are all wrong would start training and
read nothing until the health check stops it. An image that is there but cannot be decoded is
skipped and counted as the class folders' are (`twins.data.counted`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from twins.data.counted import CountedReads, ImageSample
from twins.data.folder import read_regular_file
from twins.data.images import decode_rgb
from twins.errors import TwinsError

CSV_NAMES = {"train": "train.csv", "val": "val.csv"}
_HEADER = ("path", "label")


def is_csv_data(url: str) -> bool:
    """Whether `url` is a local folder holding `train.csv`: images labelled by CSV files."""
    return (Path(url).expanduser() / CSV_NAMES["train"]).is_file()


class CsvImages(CountedReads, Dataset):
    """The images of one CSV file: (image, class) samples, None for an image that cannot be
    decoded. `classes`: the class names to read the labels with (those of `train.csv` for
    `val.csv`); None derives them from this file's labels."""

    def __init__(
        self,
        csv_file: str | Path,
        transform: Any = None,
        *,
        classes: list[str] | None = None,
        decode: Callable[[bytes], tuple[Any, str]] = decode_rgb,
    ) -> None:
        self.csv_file = Path(csv_file).expanduser()
        self.root = str(self.csv_file)
        self.transform, self.decode = transform, decode
        self.left_out: list[str] = []
        rows = _read_rows(self.csv_file)
        self.classes = list(classes) if classes is not None else _classes_of(rows)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        folder = self.csv_file.parent
        self.samples = [
            (str(folder / path), self._target(line, label)) for line, path, label in rows
        ]
        self.targets = [target for _, target in self.samples]
        self.keys = [path for _, path, _ in rows]  # as written: the same on every machine
        _check_files_exist(self.csv_file, rows, self.samples)
        self.init_counts(len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ImageSample | None:
        path, target = self.samples[index]
        return self.read_sample(index, target, lambda: self.decode(read_regular_file(path)))

    def file_name(self, index: int) -> str:
        return self.samples[index][0]

    def sample_keys(self) -> list[str]:
        """Each sample's path as the CSV writes it (relative to the CSV's folder)."""
        return list(self.keys)

    def _target(self, line: int, label: str) -> int:
        index = self.class_to_idx.get(label)
        if index is None and label.isdigit():  # "007" names class 7 where classes are integers
            index = self.class_to_idx.get(str(int(label)))
        if index is None:
            known = ", ".join(self.classes[:5]) + (" ..." if len(self.classes) > 5 else "")
            raise TwinsError(
                f"{self.csv_file} row {line}: label {label!r} is not a class of "
                f"{CSV_NAMES['train']} ({known}); fix the label or add images of it to "
                f"{CSV_NAMES['train']}",
                argument="data_url",
            )
        return index


def _read_rows(csv_file: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of each row after the header `path,label`."""
    if not csv_file.is_file():
        raise TwinsError(f"{csv_file} not found; set data_url", argument="data_url")
    with open(csv_file, newline="", encoding="utf-8-sig") as file:  # utf-8-sig: Excel's BOM
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or tuple(cell.strip().lower() for cell in header[:2]) != _HEADER:
            raise TwinsError(
                f"{csv_file} starts with {header!r}, not the header row 'path,label': add it "
                "as the first line",
                argument="data_url",
            )
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, as spreadsheets leave at the end
            path, label = (cells + ["", ""])[:2]
            path, label = path.strip(), label.strip()
            if not path or not label or len(cells) > 2:
                raise TwinsError(
                    f"{csv_file} row {reader.line_num}: {','.join(cells)!r} is not "
                    "'path,label'; give each row one image path and one label",
                    argument="data_url",
                )
            rows.append((reader.line_num, path, label))
    if not rows:
        raise TwinsError(f"{csv_file} lists no images: add rows 'path,label'", argument="data_url")
    return rows


def _classes_of(rows: list[tuple[int, str, str]]) -> list[str]:
    """Integer labels are class indices ("0" .. max); names are sorted, as class folders are."""
    labels = {label for _, _, label in rows}
    if all(label.isdigit() for label in labels):
        return [str(index) for index in range(max(int(label) for label in labels) + 1)]
    return sorted(labels)


def _check_files_exist(
    csv_file: Path, rows: list[tuple[int, str, str]], samples: list[tuple[str, int]]
) -> None:
    missing = [
        (line, path)
        for (line, path, _), (full, _) in zip(rows, samples, strict=True)
        if not os.path.isfile(full)
    ]
    if missing:
        line, path = missing[0]
        more = f" (and {len(missing) - 1} more rows)" if len(missing) > 1 else ""
        raise TwinsError(
            f"{csv_file} row {line}: {path} not found in {csv_file.parent}{more}; paths are "
            "relative to the CSV's folder: fix the path or delete the row",
            argument="data_url",
        )


def open_csv_data(
    url: str, transforms: dict[str, Any], decoder: Callable[[str], Callable[[bytes], Any]]
) -> dict[str, CsvImages]:
    """The splits named in `transforms` (split -> transform) of the CSV-labelled folder `url`,
    each read with the classes of `train.csv`; `decoder(split)` decodes a split's images."""
    root = Path(url).expanduser()
    classes = _classes_of(_read_rows(root / CSV_NAMES["train"]))
    splits = {}
    for split, transform in transforms.items():
        csv_file = root / CSV_NAMES[split]
        if not csv_file.is_file():
            raise TwinsError(
                f"{root} holds {CSV_NAMES['train']} but no {CSV_NAMES[split]}: add it, or set "
                "val_split (e.g. 0.05) to hold out part of the training images",
                argument="data_url",
            )
        splits[split] = CsvImages(csv_file, transform, classes=classes, decode=decoder(split))
    return splits


def has_csv_validation(url: str) -> bool:
    """Whether the CSV-labelled folder `url` has its own validation part (`val.csv`)."""
    return (Path(url).expanduser() / CSV_NAMES["val"]).is_file()
