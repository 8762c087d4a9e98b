"""The classifier's train and validation data: class folders (`twins.data.folder`), a packed
data set (`twins.data.packed`) or a Parquet set (`twins.data.parquet`), with the seed's
transforms.

Layout (the seed's, and ImageNet's): `data_url/train/<class>/<image>` and
`data_url/val/<class>/<image>`, or a folder or bucket prefix holding a packed set's
manifest.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from twins import storage
from twins.data.folder import SafeImageFolder
from twins.data.images import decoder_for
from twins.data.packed import format as packed
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
    """The splits named in `transforms` (split -> transform) of the data at `cfg.data_url`."""
    url = cfg.data_url
    if is_parquet_data(url):
        return open_parquet_data(cfg, transforms)
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
        raise TwinsError(
            f"data folder {folder} not found: {layout}; set data_url", argument="data_url"
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
