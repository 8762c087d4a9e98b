"""The packed data set format that `twins pack` writes and `ShardDataset` reads.

A packed data set is a folder (or an object-store prefix) holding, for each split
(`train`, `val`):
- `<split>-NNNNNN.tar`: WebDataset-compatible uncompressed tar shards. Each sample is two
  members with the same key (`<split>_NNNNNNNN`, its place in the split's packed order, no
  dots): `<key>.jpg` (the image file's bytes as they were; a non-JPEG keeps its extension,
  e.g. `<key>.png`) and `<key>.cls` (the class index as ASCII digits). Headers are fixed
  (ustar, mtime 0, uid/gid 0, mode 0644), so the same input gives the same bytes.
- `<split>-NNNNNN.idx.json`: the shard's member index, for random access:
  `{"format": "twins-shard-index", "version", "shard", "bytes", "sha256", "inputs",
  "members": [[key, extension, offset, size, class, source], ...]}`: where each sample's
  image bytes lie in the tar, its class, and the file it was packed from (relative to the
  source folder). `inputs` fingerprints what the shard was made from, so a second `twins
  pack` keeps the shards that already hold it.
- `manifest.json`, written last: `{"format": "twins-shards", "version", "classes", "source",
  "resize_short", "pack_seed", "splits": {split: {"samples", "shards": [{"name", "samples",
  "bytes", "sha256", "index"}]}}}`.
- `_info.json`: the same splits as timm's `wds/` reader expects them (`name`, `num_samples`,
  `filenames`, `shard_lengths`), so `timm.data.create_dataset("wds/twins", root=OUT,
  split="train")` reads the shards too.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from twins.atomic import atomic_path
from twins.errors import TwinsError

FORMAT = "twins-shards"
INDEX_FORMAT = "twins-shard-index"
VERSION = 1
MANIFEST = "manifest.json"
TIMM_INFO = "_info.json"
SPLITS = ("train", "val")
BLOCK = tarfile.BLOCKSIZE  # 512: tar headers and data are padded to it


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def index_name(shard: str) -> str:
    return shard.removesuffix(".tar") + ".idx.json"


def sample_key(split: str, position: int) -> str:
    return f"{split}_{position:08d}"


def is_packed_name(name: str) -> bool:
    """A shard or index file name this format writes."""
    return any(name.startswith(f"{split}-") for split in SPLITS) and (
        name.endswith(".tar") or name.endswith(".idx.json")
    )


def member_header(name: str, size: int) -> bytes:
    """The tar header of a regular file: fixed fields only, so rewrites are byte-identical."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_end(written: int) -> bytes:
    """Two zero blocks, then zeros up to a whole tar record, as tarfile ends an archive."""
    end = written + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-end % tarfile.RECORDSIZE))


# Where a packed data set lies: a local folder, read with os, or an object-store / fsspec URL,
# read through twins.storage.


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser()


def join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}" if is_remote(url) else str(local_path(url) / name)


def read_bytes(url: str, start: int | None = None, end: int | None = None) -> bytes:
    if is_remote(url):
        from twins import storage

        return storage.read_bytes(url, start, end)
    with open(local_path(url), "rb") as file:
        if start is None:
            return file.read()
        file.seek(start)
        return file.read((end if end is not None else os.path.getsize(file.name)) - start)


def write_bytes(url: str, data: bytes) -> None:
    if is_remote(url):
        from twins import storage

        storage.write_bytes(url, data)
        return
    with atomic_path(local_path(url)) as temporary:
        temporary.write_bytes(data)


def exists(url: str) -> bool:
    if is_remote(url):
        from twins import storage

        return storage.exists(url)
    return local_path(url).exists()


def size(url: str) -> int:
    if is_remote(url):
        from twins import storage

        return storage.size(url)
    return local_path(url).stat().st_size


def list_names(url: str) -> list[str]:
    if is_remote(url):
        from twins import storage

        return storage.list_dir(url) if storage.exists(url) else []
    folder = local_path(url)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def remove(url: str) -> None:
    if is_remote(url):
        from twins import storage

        storage.remove(url)
    else:
        local_path(url).unlink(missing_ok=True)


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_json(url: str, value: Any) -> None:
    write_bytes(url, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def is_packed(url: str) -> bool:
    """Whether `url` holds a packed data set (its manifest)."""
    try:
        return exists(join(url, MANIFEST))
    except TwinsError:
        raise
    except Exception:
        return False


def read_manifest(url: str) -> dict[str, Any]:
    """The manifest of the packed data set at `url`, checked for format and version."""
    path = join(url, MANIFEST)
    try:
        manifest = read_json(path)
    except FileNotFoundError as error:
        raise TwinsError(
            f"{path} not found: {url} is not a packed data set; make one with "
            "`twins pack IMAGEFOLDER OUT`",
            argument="data_url",
        ) from error
    except (ValueError, UnicodeDecodeError) as error:
        raise TwinsError(f"{path} is not a manifest (not JSON): re-run `twins pack`") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TwinsError(f"{path} is not a twins shard manifest: re-run `twins pack`")
    if manifest.get("version", 0) > VERSION:
        raise TwinsError(f"{path} was written by a newer twins: upgrade to read it")
    return manifest
