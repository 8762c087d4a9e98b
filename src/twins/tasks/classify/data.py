"""The classifier's train and validation data: class folders (`twins.data.folder`), images
labelled by CSV files (`twins.data.csv_labels`), a packed data set (`twins.data.packed`) or a
Parquet set (`twins.data.parquet`), with the seed's transforms; `val_split` holds out part of
the training images where the data has no validation part (`twins.data.split`).

Layout (the seed's, and ImageNet's): `data_url/train/<class>/<image>` and
`data_url/val/<class>/<image>`; or `data_url/train.csv` (and `val.csv`), rows `path,label`;
or a folder or bucket prefix holding a packed set's manifest.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from twins import storage
from twins.data.csv_labels import has_csv_validation, is_csv_data, open_csv_data
from twins.data.folder import SafeImageFolder
from twins.data.images import decoder_for
from twins.data.packed import format as packed
from twins.data.parquet.layout import find_files
from twins.data.split import read_for_evaluation, split_off_validation
from twins.errors import TwinsError
from twins.tasks.classify.parquet_data import is_parquet_data, open_parquet_data
from twins.tasks.classify.train_transform import build_train_transform
from twins.tasks.classify.transforms import build_eval_transform

logger = logging.getLogger(__name__)


def build_datasets(cfg: Any) -> tuple[Any, Any, list[str]]:
    """Return (train set, validation set, class names) from `cfg.data_url`: an ImageFolder
    (SafeImageFolder), or a packed data set, local or behind a URL (ShardDataset).

    Reads `data_url` and `num_classes`; for a packed data set `seed`, `shuffle_block`,
    `cache_dir` and `cache_size`; and, through the transforms, `image_size`, `crop_pct`,
    `interpolation`, `auto_augment`, `hflip`, `re_prob`, `re_mode`, `re_count`.
    """
    transforms = {"train": build_train_transform(cfg), "val": build_eval_transform(cfg)}
    splits = open_data(cfg, transforms)
    train, val = splits["train"], splits["val"]
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise TwinsError(
            f"class folders of {train.root} and {val.root} differ "
            f"(only in train: {_names(only_train)}; only in val: {_names(only_val)}); "
            "give both splits the same class folders"
        )
    if len(train.classes) != cfg.num_classes:
        raise TwinsError(
            f"{train.root} has {len(train.classes)} class folders but num_classes is "
            f"{cfg.num_classes}; set num_classes={len(train.classes)} or fix the folders"
        )
    return train, val, list(train.classes)


def is_packed_data(url: str) -> bool:
    """Whether `url` is read as a packed data set: a folder holding manifest.json, or a URL
    (behind which only packed data sets are read)."""
    return storage.is_remote(url) or packed.is_packed(url)


def open_data(cfg: Any, transforms: dict[str, Any]) -> dict[str, Any]:
    """The splits named in `transforms` (split -> transform) of the data at `cfg.data_url`;
    with `val_split`, both parts of its training images (`twins.data.split`)."""
    if cfg.val_split:
        return open_with_val_split(cfg, transforms)
    return open_source(cfg, transforms)


def open_with_val_split(cfg: Any, transforms: dict[str, Any]) -> dict[str, Any]:
    """The training images of `cfg.data_url` split in two by `val_split` and `seed`; refused
    where the data has a validation part of its own."""
    if has_validation_part(cfg.data_url):
        raise TwinsError(
            f"{storage.display(cfg.data_url)} has a validation part of its own, so val_split "
            f"{cfg.val_split:g} would hold out training images for nothing: leave val_split out",
            argument="val_split",
        )

    def open_train(split: str) -> Any:
        source = open_source(cfg, {"train": transforms[split]})["train"]
        if split != "train":
            read_for_evaluation(source, decoder_for(split))
        return source

    return split_off_validation(open_train, list(transforms), cfg.val_split, int(cfg.seed))


def has_validation_part(url: str) -> bool:
    """Whether the data at `url` has its own validation images: `val/` class folders,
    `val.csv`, or a packed data set's val split."""
    if is_csv_data(url):
        return has_csv_validation(url)
    if is_parquet_data(url):
        return "val" in find_files(url)
    if is_packed_data(url):
        return "val" in packed.read_manifest(url)["splits"]
    return (Path(url).expanduser() / "val").is_dir()


def open_source(cfg: Any, transforms: dict[str, Any]) -> dict[str, Any]:
    """`open_data` of the data source at `cfg.data_url`, as it is stored."""
    url = cfg.data_url
    if is_parquet_data(url):
        return open_parquet_data(cfg, transforms)
    if is_csv_data(url):
        return open_csv_data(url, transforms, decoder_for)
    if is_packed_data(url):
        from twins.data.packed.reader import open_packed
        from twins.sizes import parse_size

        # At start, within seconds and in one specific line: an unreachable endpoint (not after
        # the whole retry budget), wrong credentials, a missing bucket or prefix.
        if storage.is_remote(url):
            storage.check_access(url)
        if not packed.is_packed(url):
            raise TwinsError(
                f"{storage.display(url)} holds no packed data set (manifest.json): an "
                "ImageFolder is read from a local folder only; pack it with "
                f"`twins pack IMAGEFOLDER {url}`",
                argument="data_url",
            )
        return open_packed(
            url,
            transforms,
            seed=int(cfg.seed),
            shuffle_block=int(cfg.shuffle_block),
            cache_dir=cfg.cache_dir or None,
            cache_size=parse_size(cfg.cache_size),
        )
    root = Path(url).expanduser()
    return {split: _open_split(root, split, t) for split, t in transforms.items()}


def _open_split(root: Path, split: str, transform: Any) -> SafeImageFolder:
    folder = root / split
    layout = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image>"
    if not folder.is_dir():
        hold_out = (
            " (or val_split, e.g. 0.05, to hold out training images)" if split == "val" else ""
        )
        raise TwinsError(
            f"data folder {folder} not found: {layout}; set data_url{hold_out}",
            argument="data_url",
        )
    try:
        return SafeImageFolder(folder, transform=transform, decode=decoder_for(split))
    except FileNotFoundError as error:  # no class folders, or a class folder without images
        message = str(error).splitlines()[0]
        raise TwinsError(f"{message} ({layout}); add images or remove empty folders") from error


def _names(names: list[str], shown: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
