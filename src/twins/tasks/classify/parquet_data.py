"""The classifier's data from a Parquet set in the Hub's layout (`data/train-*.parquet`,
`data/validation-*.parquet`), local or behind a URL (`twins.data.parquet`)."""

from __future__ import annotations

from typing import Any

from twins import storage


def is_parquet_data(url: str) -> bool:
    """Whether `url` holds a Parquet set; a URL's access is checked first, within seconds and
    in one specific line (an unreachable endpoint, wrong credentials, a missing bucket)."""
    from twins.data.parquet.layout import is_parquet_set

    if storage.is_remote(url):
        storage.check_access(url)
    return is_parquet_set(url)


def open_parquet_data(cfg: Any, transforms: dict[str, Any]) -> dict[str, Any]:
    """The splits named in `transforms` of the Parquet set at `cfg.data_url`, in the epoch
    order of `seed` and `shuffle_block`, through the cache of `cache_dir` and `cache_size`
    when remote."""
    from twins.data.parquet.reader import open_parquet
    from twins.sizes import parse_size

    return open_parquet(
        cfg.data_url,
        transforms,
        seed=int(cfg.seed),
        shuffle_block=int(cfg.shuffle_block),
        cache_dir=cfg.cache_dir or None,
        cache_size=parse_size(cfg.cache_size),
    )
