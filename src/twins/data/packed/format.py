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
  "source_format" ("imagefolder", or "parquet": each member's source is then
  `data/<file>:<row>`, and its class the row's label), "resize_short", "pack_seed",
  "splits": {split: {"samples", "shards": [{"name", "samples", "bytes", "sha256", "index",
  "index_sha256"}]}}}`: the sha256 of each shard and of its index
  file (packs written before `index_sha256` was recorded are read without that check), and
  each split's total of samples.
- An indexed set (`twins pack --index-only`, `twins.data.packed.indexer`) is tar shards
  someone else wrote, under their own names, with our index beside each and a manifest marked
  `"indexed": true`; each member's last column is then the label member the class was read
  from (`<key>.cls` or `<key>.txt`), and `left_out` names the samples without an image or label.
- `_info.json`: the same splits as timm's `wds/` reader expects them (`name`, `num_samples`,
  `filenames`, `shard_lengths`), so `timm.data.create_dataset("wds/twins", root=OUT,
  split="train")` reads the shards too.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

from twins import storage
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


def local_path(url: str) -> Path:
    """The local path of a plain path or file:// URL."""
    return Path(storage.local_path(url)).expanduser()


def list_names(url: str) -> list[str]:
    """The names under `url`; none when nothing is there yet."""
    try:
        return storage.list_dir(url)
    except FileNotFoundError:
        return []


def read_json(url: str) -> Any:
    return json.loads(storage.read_bytes(url))


def json_bytes(value: Any) -> bytes:
    """`value` as this format writes its JSON files: the same value, the same bytes."""
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def write_json(url: str, value: Any) -> None:
    storage.write_bytes(url, json_bytes(value))


def is_packed(url: str) -> bool:
    """Whether `url` holds a packed data set (its manifest)."""
    try:
        return storage.exists(storage.join(url, MANIFEST))
    except TwinsError:
        raise
    except Exception:
        return False


def read_manifest(url: str) -> dict[str, Any]:
    """The manifest of the packed data set at `url`, checked for format and version."""
    path = storage.join(url, MANIFEST)
    try:
        manifest = read_json(path)
    except FileNotFoundError as error:
        raise TwinsError(
            f"{storage.display(path)} not found: {storage.display(url)} is not a packed data set; make one with "
            "`twins pack IMAGEFOLDER OUT`",
            argument="data_url",
        ) from error
    except TwinsError:  # storage's line (credentials, bucket, endpoint): a ValueError too
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise TwinsError(f"{path} is not a manifest (not JSON): re-run `twins pack`") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TwinsError(f"{path} is not a twins shard manifest: re-run `twins pack`")
    if manifest.get("version", 0) > VERSION:
        raise TwinsError(f"{path} was written by a newer twins: upgrade to read it")
    check_names(manifest, storage.display(path))
    return manifest


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_safe_name(name: str) -> bool:
    """A file name that stays inside the data set's folder and a node's cache: no `/`, no
    `..`, no leading dot (the cache's own files start with one)."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def check_names(manifest: dict[str, Any], shown: str) -> None:
    """Refuse, in one line, a manifest whose splits or files are not named as `twins pack`
    names them: the names become paths in the output and in a node's cache (an absolute name
    or one with `..` would write outside them), and each split's shards are numbered from 0
    without a gap (a dropped entry would leave its samples out unseen)."""
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise TwinsError(f"{shown} lists no splits: re-run `twins pack`")
    if manifest.get("indexed"):
        _check_indexed_names(splits, shown)
        return
    for split, value in splits.items():
        if split not in SPLITS:
            raise TwinsError(
                f"{shown} names a split {split!r}: `twins pack` writes {' and '.join(SPLITS)} "
                "only; re-run `twins pack`"
            )
        for number, shard in enumerate(value.get("shards", ())):
            name, expected = shard.get("name"), shard_name(split, number)
            if not isinstance(name, str) or not _is_shard_name(name, split):
                raise TwinsError(
                    f"{shown} names shard {name!r} in split {split}, not a shard name of "
                    f"`twins pack` ({split}-NNNNNN.tar, no / or ..): re-run `twins pack`"
                )
            if name != expected:
                raise TwinsError(
                    f"{shown} lists shard {name} where {expected} belongs: an entry of split "
                    f"{split} is missing or out of order; re-run `twins pack`"
                )
            if shard.get("index", index_name(name)) != index_name(name):
                raise TwinsError(
                    f"{shown} names the index of shard {name} {shard['index']!r}, not "
                    f"{index_name(name)}: re-run `twins pack`"
                )


def _check_indexed_names(splits: dict[str, Any], shown: str) -> None:
    """The names of an indexed set (`twins pack --index-only`): its shards keep the names they
    were given, but each must stay inside the folder, with its index beside it."""
    for split, value in splits.items():
        if split not in SPLITS:
            raise TwinsError(
                f"{shown} names a split {split!r}: `twins pack --index-only` writes "
                f"{' and '.join(SPLITS)} only; re-run it"
            )
        for shard in value.get("shards", ()):
            name = shard.get("name")
            if not isinstance(name, str) or not is_safe_name(name) or not name.endswith(".tar"):
                raise TwinsError(
                    f"{shown} names shard {name!r} in split {split}, not a tar file beside it "
                    "(no / or leading dot): re-run `twins pack --index-only`"
                )
            if shard.get("index", index_name(name)) != index_name(name):
                raise TwinsError(
                    f"{shown} names the index of shard {name} {shard['index']!r}, not "
                    f"{index_name(name)}: re-run `twins pack --index-only`"
                )


def _is_shard_name(name: str, split: str) -> bool:
    number = name.removeprefix(f"{split}-").removesuffix(".tar")
    return name == shard_name(split, int(number)) if number.isdigit() else False


# A data set's class names where its files give none (WebDataset shards, Parquet without a
# ClassLabel): a JSON list beside them, class i the i-th name.
CLASSES_FILE = "classes.json"


def read_classes_file(folder: str) -> list[str] | None:
    """The class names of `folder/classes.json` (local or in a store), None where there is
    none; TwinsError where it is not a JSON list of names."""
    location = storage.join(folder, CLASSES_FILE)
    if not storage.exists(location):
        return None
    try:
        names = json.loads(storage.read_bytes(location))
    except ValueError as error:
        raise TwinsError(
            f"{storage.display(location)} is not JSON: write a list of class names"
        ) from error
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TwinsError(
            f"{storage.display(location)} is not a list of class names: write "
            '["name of class 0", "name of class 1", ...]'
        )
    return names
