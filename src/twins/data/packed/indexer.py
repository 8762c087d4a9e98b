"""`twins pack --index-only SRC`: our index and manifest beside WebDataset tar shards someone
else wrote, without rewriting a byte of them, so that `ShardDataset` reads them by index
(random access, the epoch order of blocks of shards, exact resume).

The shards: timm's layout (`imagenet1k-train-0000.tar`, ..., `imagenet1k-validation-00.tar`,
an `_info.json` listing each split's `filenames`, as a list or a `{0000..1023}` pattern), or
any `{prefix}-{0000..N}.tar` set whose prefix ends in a split word (`train`, `validation` or
`val`; `test` shards are named and left alone). A sample is the members sharing a key (the
member name up to its first dot, as WebDataset reads it): an image (`.jpg`, `.jpeg`, `.png`,
`.webp`) and a label (`.cls`: the class index; `.txt`: the index or the class name). Samples
lacking either are left out, counted and named.

Classes: a `classes.json` in SRC (a list of names, in index order), else the names the `.txt`
labels give (sorted), else the label integers. Each index is written beside its shard
(`<shard>.idx.json`, the member's last column the label member it was read from), then
`manifest.json` (`"indexed": true`), last. A shard in a bucket is downloaded to a temporary
folder to be hashed and listed, and never uploaded.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins import storage
from twins.data.packed import format as packed
from twins.errors import TwinsError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
LABEL_EXTENSIONS = (".cls", ".txt")
CLASSES_FILE = packed.CLASSES_FILE
SPLIT_WORDS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
_SHARD = re.compile(r"^(?P<prefix>[^/]+?)[-_](?P<number>\d+)\.tar$")
_PATTERN = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass
class IndexReport:
    """What `index_shards` found: samples per split, shards, samples left out (named)."""

    source: str
    samples: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    left_out: list[str] = field(default_factory=list)
    not_indexed: list[str] = field(default_factory=list)  # shards of a test split


def index_shards(source: str) -> IndexReport:
    """Write an index beside every tar shard of the train and validation splits at `source`
    (a folder or URL), then the manifest that makes `source` a data_url."""
    if storage.is_remote(source):
        storage.check_access(source, write=True)
    shown = storage.display(source)
    names = packed.list_names(source)
    splits = _splits(source, names)
    report = IndexReport(shown, not_indexed=splits.pop("test", []))
    for split in ("train", "val"):
        if not splits.get(split):
            raise TwinsError(
                f"{shown} holds no {split} shards: name them {{prefix}}-"
                f"{'train' if split == 'train' else 'validation'}-NNNN.tar (timm's layout), "
                "or list them in _info.json",
                argument="source",
            )

    def listing(names: list[str]) -> list[_Shard]:
        if storage.is_remote(source):  # downloaded to be read, a few at a time
            from twins.data.packed.reader import in_threads

            return in_threads(lambda name: _list_shard(source, name), names)
        return [_list_shard(source, name) for name in names]

    listed = {split: listing(shards) for split, shards in splits.items()}
    classes = _classes(source, [s for shards in listed.values() for s in shards])
    # Every index made (and every label checked) before one is written; an earlier manifest
    # goes first, so none vouches for a mix of old and new indexes if this run stops midway.
    indexes = {split: [(s, _index(s, classes)) for s in shards] for split, shards in listed.items()}
    storage.remove(storage.join(source, packed.MANIFEST))
    manifest_splits = {}
    for split, pairs in indexes.items():
        records = []
        for shard, index in pairs:
            text = packed.json_bytes(index)
            storage.write_bytes(storage.join(source, packed.index_name(shard.name)), text)
            records.append(
                {
                    "name": shard.name,
                    "samples": len(index["members"]),
                    "bytes": shard.bytes,
                    "sha256": shard.sha256,
                    "index": packed.index_name(shard.name),
                    "index_sha256": hashlib.sha256(text).hexdigest(),
                }
            )
            report.left_out += [f"{shard.name}:{entry}" for entry in shard.left_out]
        manifest_splits[split] = {"samples": sum(r["samples"] for r in records), "shards": records}
        report.samples[split] = manifest_splits[split]["samples"]
        report.shards += len(records)
    manifest = {
        "format": packed.FORMAT,
        "version": packed.VERSION,
        "indexed": True,
        "classes": classes,
        "source": shown,
        "left_out": report.left_out,
        "splits": manifest_splits,
    }
    packed.write_json(storage.join(source, packed.MANIFEST), manifest)  # last: vouches for all
    return report


def _splits(source: str, names: list[str]) -> dict[str, list[str]]:
    """Split -> its shard names: those `_info.json` lists, else the tar names' split words."""
    if packed.TIMM_INFO in names:
        try:
            info = packed.read_json(storage.join(source, packed.TIMM_INFO))
            listed = {
                SPLIT_WORDS[split]: _expand(value["filenames"])
                for split, value in info["splits"].items()
                if split in SPLIT_WORDS
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise TwinsError(
                f"{storage.display(storage.join(source, packed.TIMM_INFO))} is not timm's "
                f"_info.json (splits: name: filenames): fix it, or remove it to find the "
                "shards by name"
            ) from error
        for split, shards in listed.items():
            for name in shards:
                if not packed.is_safe_name(name) or name not in names:
                    raise TwinsError(
                        f"{packed.TIMM_INFO} of {storage.display(source)} lists {name!r} in "
                        f"split {split}, which is not a tar shard there: fix _info.json"
                    )
        return listed
    found: dict[str, list[tuple[str, int, str]]] = {}
    for name in names:
        match = _SHARD.match(name)
        if not match or not packed.is_safe_name(name):
            continue
        word = re.split(r"[-_]", match["prefix"])[-1].lower()
        if word in SPLIT_WORDS:
            found.setdefault(SPLIT_WORDS[word], []).append(
                (match["prefix"], int(match["number"]), name)
            )
    return {split: [n for *_, n in sorted(shards)] for split, shards in found.items()}


def _expand(filenames: Any) -> list[str]:
    """timm's `filenames`: a list of names or brace patterns (`x-{0000..0003}.tar`)."""
    patterns = [filenames] if isinstance(filenames, str) else list(filenames)
    names = []
    for pattern in patterns:
        match = _PATTERN.search(pattern)
        if match is None:
            names.append(pattern)
            continue
        first, last = match.groups()
        for number in range(int(first), int(last) + 1):
            names.append(
                pattern[: match.start()] + str(number).zfill(len(first)) + pattern[match.end() :]
            )
    return names


@dataclass
class _Shard:
    """A tar shard as listed: samples (key, image extension, offset, size, label member, label
    text), its size and sha256, and what was left out."""

    name: str
    bytes: int
    sha256: str
    samples: list[tuple[str, str, int, int, str, str]]
    left_out: list[str]


def _list_shard(source: str, name: str) -> _Shard:
    location = storage.join(source, name)
    if not storage.is_remote(source):
        return _read_tar(packed.local_path(location), name)
    with tempfile.TemporaryDirectory(prefix="twins-index-") as folder:
        path = Path(folder) / name
        storage.get_file(location, path)
        return _read_tar(path, name)


def _read_tar(path: Path, name: str) -> _Shard:
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    labels: dict[str, str] = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                match = re.match(r"^((?:.*/|)[^./]+)(\.[^/]*)$", info.name)
                if match is None:
                    continue
                key, extension = match.group(1), match.group(2)
                members.setdefault(key, {})[extension] = info
                if extension.lower() in LABEL_EXTENSIONS:
                    data = tar.extractfile(info).read()  # type: ignore[union-attr]
                    labels[key] = data.decode(errors="replace").strip()
    except tarfile.TarError as error:
        raise TwinsError(f"shard {name} is not a readable tar ({error}): replace it") from error
    samples, left_out = [], []
    for key, found in members.items():
        image = next((e for e in found if e.lower() in IMAGE_EXTENSIONS), None)
        label = next((e for e in found if e.lower() in LABEL_EXTENSIONS), None)
        if image is None or label is None:
            left_out.append(f"{key} (no {'image' if image is None else 'label'})")
            continue
        info = found[image]
        samples.append((key, image, info.offset_data, info.size, key + label, labels[key]))
    return _Shard(name, path.stat().st_size, packed.file_sha256(path), samples, left_out)


def _classes(source: str, shards: list[_Shard]) -> list[str]:
    texts = {text for shard in shards for *_, text in shard.samples}
    names = packed.read_classes_file(source)
    if names is not None:
        return names
    if all(text.isdigit() for text in texts):
        return [str(i) for i in range(max((int(t) for t in texts), default=-1) + 1)]
    return sorted(t for t in texts if not t.isdigit())


def _index(shard: _Shard, classes: list[str]) -> dict[str, Any]:
    lookup = {name: index for index, name in enumerate(classes)}
    members = []
    for key, extension, offset, size, label, text in shard.samples:
        target = int(text) if text.isdigit() else lookup.get(text, -1)
        if not 0 <= target < len(classes):
            raise TwinsError(
                f"{key}{extension} of shard {shard.name} has the label {text!r}, not one of the "
                f"{len(classes)} classes: fix its {label}, or name every class in {CLASSES_FILE}"
            )
        members.append([key, extension, offset, size, target, label])
    return {
        "format": packed.INDEX_FORMAT,
        "version": packed.VERSION,
        "shard": shard.name,
        "bytes": shard.bytes,
        "sha256": shard.sha256,
        "members": members,
        "left_out": shard.left_out,
    }
