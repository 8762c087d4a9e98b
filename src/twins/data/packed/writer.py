"""`twins pack`: an ImageFolder written as WebDataset tar shards with an index and a manifest
(the format: `twins.data.packed.format`).

The files packed are those training would read: the same discovery and extensions as
`SafeImageFolder`. Each split's samples are shuffled across classes with a fixed seed (recorded
in the manifest), so readers that stream the shards in order (timm's `wds/`) see mixed classes,
then cut into shards of about `shard_size` bytes, in that order. Shards are written in parallel
by a pool of processes, each to a temporary name renamed when whole (or uploaded whole to an
object store), its index after it, the manifest last. A pack killed at any moment and run again
keeps the shards whose index says they hold the planned samples (and whose bytes match it) and
writes the rest; the same input always gives the same bytes.

`resize_short` re-encodes each image whose short side is longer (upright, RGB, JPEG quality
95) with that side resized to it: smaller shards, faster decoding, but other training data than
the original files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from twins import storage
from twins.atomic import atomic_path, remove_temporaries
from twins.data.packed import format as packed
from twins.data.packed.parquet_source import RowReader, image_extension
from twins.errors import TwinsError
from twins.seeds import derive_seed

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 512 * 1024**2
JPEG_QUALITY = 95
# Images re-encoded up front to estimate how much --resize-short shrinks the data.
_SIZE_PROBE = 64


@dataclass
class PackReport:
    output: str
    samples: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    kept: int = 0
    bytes: int = 0


def pack(
    source: str | Path,
    output: str,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resize_short: int | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> PackReport:
    """Pack the ImageFolder `source` (with train/ and val/), or the Parquet set in the Hub's
    layout at `source` (a folder or URL), into shards at `output` (a folder or an
    object-store URL)."""
    from twins.data.parquet.layout import is_parquet_set

    parquet = is_parquet_set(str(source))
    source = str(source) if parquet else Path(source).expanduser()
    _check_places(source, output, parquet)
    if not storage.is_remote(output):
        remove_temporaries(packed.local_path(output))  # of a pack killed while writing
    if parquet:
        from twins.data.packed.parquet_source import plan_parquet

        classes, plans = plan_parquet(str(source), shard_size, seed, resize_short)
    else:
        classes, plans = _plan(Path(source), shard_size, resize_short, seed)
    tasks = [task for split in packed.SPLITS for task in plans[split]]
    recorded = _recorded_indexes(output)
    for task in tasks:
        task["output"], task["resize_short"] = output, resize_short
        task["index_sha256"] = recorded.get(task["name"])
    report = PackReport(output)
    records: dict[str, dict[str, Any]] = {}
    bar = _progress_bar(sum(len(t["members"]) for t in tasks), progress)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    with contextlib.ExitStack() as stack:
        if workers == 1:
            results = (write_shard(task) for task in tasks)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers))
            results = (
                f.result() for f in as_completed([pool.submit(write_shard, t) for t in tasks])
            )
        for record in results:
            records[record["name"]] = record
            report.kept += record.pop("kept")
            bar.update(record["samples"])
    bar.close()
    _remove_stale(output, {name for name in records} | {r["index"] for r in records.values()})
    splits = {}
    for split in packed.SPLITS:
        shards = [records[task["name"]] for task in plans[split]]
        splits[split] = {"samples": sum(s["samples"] for s in shards), "shards": shards}
        report.samples[split] = splits[split]["samples"]
    report.shards = len(records)
    report.bytes = sum(r["bytes"] for r in records.values())
    name = str(source).rstrip("/").rsplit("/", 1)[-1]
    packed.write_json(storage.join(output, packed.TIMM_INFO), _timm_info(name or "twins", splits))
    manifest = {
        "format": packed.FORMAT,
        "version": packed.VERSION,
        "classes": classes,
        "source": str(source),
        "source_format": "parquet" if parquet else "imagefolder",
        "resize_short": resize_short,
        "pack_seed": seed,
        "shard_size": shard_size,
        "splits": splits,
    }
    packed.write_json(storage.join(output, packed.MANIFEST), manifest)
    return report


def _check_places(source: Path | str, output: str, parquet: bool = False) -> None:
    """A `parquet` set may lie in a bucket; an ImageFolder is a local folder with train/ and
    val/. OUT must not lie inside SRC."""
    if parquet and storage.is_remote(str(source)):
        if storage.is_remote(output):
            storage.check_access(output, write=True)
        return
    source = Path(source)
    if storage.is_remote(str(source)):
        raise TwinsError(
            f"SRC {source} must be a local ImageFolder: download it first", argument="source"
        )
    missing = [split for split in packed.SPLITS if not (source / split).is_dir()]
    if missing and not parquet:
        raise TwinsError(
            f"{source} has no {' or '.join(f'{m}/' for m in missing)} folder: SRC must be an "
            f"ImageFolder with {source}/train/<class>/<image> and {source}/val/<class>/<image>",
            argument="source",
        )
    if storage.is_remote(output):
        # Before any image is read: a missing bucket, wrong credentials, a bad endpoint.
        storage.check_access(output, write=True)
        return
    out = packed.local_path(output).resolve()
    if out == source.resolve() or source.resolve() in out.parents:
        raise TwinsError(
            f"OUT {output} lies inside SRC {source}: the shards would be read as images of a "
            "class; write them elsewhere",
            argument="output",
        )
    if out.exists() and not out.is_dir():
        raise TwinsError(f"OUT {output} is a file: name a folder", argument="output")


def _plan(
    source: Path, shard_size: int, resize_short: int | None, seed: int
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """The classes, and for each split its shards: name and members (key, path, class, source
    name), in the split's shuffled order, cut at about `shard_size` bytes."""
    from twins.data.folder import SafeImageFolder, describe_left_out  # as training finds them

    found, classes = {}, None
    for number, split in enumerate(packed.SPLITS):
        try:
            folder = SafeImageFolder(source / split)
        except FileNotFoundError as error:
            message = str(error).splitlines()[0]
            raise TwinsError(f"{message}: add images or remove empty folders") from error
        if classes is not None and folder.classes != classes:
            raise TwinsError(
                f"class folders of {source / 'train'} and {source / 'val'} differ: give both "
                "splits the same class folders"
            )
        classes = folder.classes
        generator = torch.Generator().manual_seed(derive_seed(seed, number))
        order = torch.randperm(len(folder.samples), generator=generator).tolist()
        found[split] = _regular_files([folder.samples[i] for i in order], source)
        left_out = describe_left_out([folder], source)
        if left_out:
            logger.warning("pack: %s", left_out)
        unseen = sorted(set(range(len(classes))) - {target for _, target in found[split]})
        if unseen:
            logger.warning(
                "pack: no image of class %s in %s can be packed: a model trained on it has a "
                "class it never sees",
                ", ".join(classes[i] for i in unseen),
                source / split,
            )
    assert classes is not None
    sizes = {split: [os.stat(p).st_size for p, _ in found[split]] for split in packed.SPLITS}
    shrink = _shrink_ratio(found["train"], sizes["train"], resize_short)
    plans = {}
    for split in packed.SPLITS:
        shards: list[dict[str, Any]] = []
        members: list[list[Any]] = []
        filled = 0
        for position, ((path, target), nbytes) in enumerate(
            zip(found[split], sizes[split], strict=True)
        ):
            cost = nbytes * shrink + 3 * packed.BLOCK  # two headers and the padding, about
            if members and filled + cost > shard_size:
                shards.append(_shard_task(split, len(shards), members, resize_short))
                members, filled = [], 0
            name = Path(path).relative_to(source / split).as_posix()
            members.append([packed.sample_key(split, position), path, target, name])
            filled += cost
        if members:
            shards.append(_shard_task(split, len(shards), members, resize_short))
        plans[split] = shards
    return classes, plans


def _regular_files(samples: list[tuple[str, int]], source: Path) -> list[tuple[str, int]]:
    """`samples` without the files that cannot be packed, named in a warning: a link leading
    nowhere (training skips and counts it), a FIFO, socket or device named like an image
    (reading one would wait for ever)."""
    kept, refused = [], []
    for path, target in samples:
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            regular = False
        (kept if regular else refused).append((path, target))
    if refused:
        names = sorted(os.path.relpath(path, source) for path, _ in refused)
        logger.warning(
            "pack: left out %d image names that are no readable file (a link leading nowhere, "
            "a FIFO, a device): %s%s",
            len(names),
            ", ".join(names[:5]),
            f" and {len(names) - 5} more" if len(names) > 5 else "",
        )
    return kept


def _shard_task(
    split: str, number: int, members: list[list[Any]], resize_short: int | None
) -> dict[str, Any]:
    # What the shard is made from: a shard whose index records the same is kept on a rerun.
    described = [
        [key, name, target, os.stat(path).st_size, os.stat(path).st_mtime_ns]
        for key, path, target, name in members
    ]
    text = json.dumps([packed.VERSION, resize_short, described])
    inputs = hashlib.sha256(text.encode()).hexdigest()
    return {"name": packed.shard_name(split, number), "members": members, "inputs": inputs}


def _shrink_ratio(samples: list[tuple[str, int]], sizes: list[int], resize_short: int | None):
    """Bytes after --resize-short per byte before, over the first images to be packed."""
    if not resize_short:
        return 1.0
    probe = list(zip(samples[:_SIZE_PROBE], sizes[:_SIZE_PROBE], strict=True))
    after = sum(len(encode_image(path, resize_short)[0]) for (path, _), _ in probe)
    return max(after / max(1, sum(size for _, size in probe)), 0.01)


def encode_image(path: str, resize_short: int | None) -> tuple[bytes, str]:
    """(bytes, extension) of the image member for the file at `path`: its own bytes, or with
    `resize_short` an upright RGB JPEG whose short side is at most that many pixels."""
    data = Path(path).read_bytes()
    extension = Path(path).suffix.lower()
    extension = ".jpg" if extension == ".jpeg" else extension
    return encode_data(data, extension, resize_short, path)


def encode_data(
    data: bytes, extension: str, resize_short: int | None, shown: str
) -> tuple[bytes, str]:
    """(bytes, extension) of the image member for an image file's `data` (named `shown` in a
    warning): as they are, or with `resize_short` re-encoded as `encode_image` says."""
    if not resize_short:
        return data, extension
    from PIL import Image

    from twins.data.images import decode_rgb

    try:
        image, _ = decode_rgb(data)
    except Exception as error:  # kept as it is: training skips and counts it, as from a folder
        logger.warning("packing unreadable image %s as it is (%s)", shown, error)
        return data, extension
    short = min(image.size)
    if short > resize_short:
        scale = resize_short / short
        width, height = (max(1, round(side * scale)) for side in image.size)
        image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), ".jpg"


def write_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Write one shard and its index (unless a whole one holding `task`'s samples is there);
    returns its manifest record with `kept` saying whether it was already there."""
    output, name = task["output"], task["name"]
    shard_url, index_url = storage.join(output, name), storage.join(output, packed.index_name(name))
    kept = _existing(shard_url, index_url, task)
    if kept is not None:
        return _record(name, *kept, True)
    if storage.is_remote(output):
        with tempfile.TemporaryDirectory(prefix="twins-pack-") as folder:
            local = Path(folder) / name
            index = _write_tar(local, task)
            storage.put_file(local, shard_url)
    else:
        with atomic_path(packed.local_path(shard_url)) as temporary:
            index = _write_tar(temporary, task)
    text = packed.json_bytes(index)
    storage.write_bytes(index_url, text)  # after the shard: an index vouches for a whole shard
    return _record(name, index, hashlib.sha256(text).hexdigest(), False)


def _write_tar(path: Path, task: dict[str, Any]) -> dict[str, Any]:
    """Write the shard's tar at `path`; returns its index."""
    digest = hashlib.sha256()
    members = []
    written = 0
    with open(path, "wb") as file:

        def put(data: bytes) -> None:
            nonlocal written
            file.write(data)
            digest.update(data)
            written += len(data)

        rows = RowReader(task["parquet"]) if task.get("parquet") else None
        for key, source, target, name in task["members"]:
            if rows is None:
                image, extension = encode_image(source, task["resize_short"])
            else:
                data, path = rows.read(*source)
                extension = image_extension(data, path)
                image, extension = encode_data(data or b"", extension, task["resize_short"], name)
            put(packed.member_header(key + extension, len(image)))
            members.append([key, extension, written, len(image), target, name])
            put(image + packed.padding(len(image)))
            label = str(target).encode()
            put(packed.member_header(key + ".cls", len(label)) + label + packed.padding(len(label)))
        put(packed.tar_end(written))
    return {
        "format": packed.INDEX_FORMAT,
        "version": packed.VERSION,
        "shard": task["name"],
        "bytes": written,
        "sha256": digest.hexdigest(),
        "inputs": task["inputs"],
        "members": members,
    }


def _existing(
    shard_url: str, index_url: str, task: dict[str, Any]
) -> tuple[dict[str, Any], str] | None:
    """The index of a whole shard at `shard_url` holding `task`'s samples, and the sha256 of
    the index file, else None. The index must list the task's samples with their classes (an
    edited one is written anew, not vouched for in the manifest). A local shard's bytes are
    hashed; an object is whole once it exists (uploads are whole), so its size is compared."""
    try:
        text = storage.read_bytes(index_url)
        index = json.loads(text)
        planned = [[key, target, name] for key, _, target, name in task["members"]]
        listed = [[key, target, name] for key, _, _, _, target, name in index["members"]]
        if index.get("inputs") != task["inputs"] or listed != planned:
            return None
        if task.get("index_sha256") not in (None, hashlib.sha256(text).hexdigest()):
            return None  # edited since the last pack wrote it
        if storage.size(shard_url) != index["bytes"]:
            return None
    except Exception:  # missing, unreadable or foreign: written anew
        return None
    local = not storage.is_remote(shard_url)
    if local and packed.file_sha256(packed.local_path(shard_url)) != index["sha256"]:
        return None
    return index, hashlib.sha256(text).hexdigest()


def _recorded_indexes(output: str) -> dict[str, str]:
    """Shard name -> the sha256 of its index, as the manifest of an earlier pack into `output`
    records them; empty when there is none (or it cannot be read)."""
    try:
        manifest = packed.read_json(storage.join(output, packed.MANIFEST))
        shards = [s for split in manifest["splits"].values() for s in split["shards"]]
        return {s["name"]: s["index_sha256"] for s in shards if "index_sha256" in s}
    except Exception:  # none, or not a manifest: nothing is vouched for
        return {}


def _record(name: str, index: dict[str, Any], index_sha256: str, kept: bool) -> dict[str, Any]:
    return {
        "name": name,
        "samples": len(index["members"]),
        "bytes": index["bytes"],
        "sha256": index["sha256"],
        "index": packed.index_name(name),
        "index_sha256": index_sha256,
        "kept": kept,
    }


def _remove_stale(output: str, current: set[str]) -> None:
    """Shards and indexes of an earlier pack into `output` that this one did not write."""
    for name in packed.list_names(output):
        if packed.is_packed_name(name) and name not in current:
            storage.remove(storage.join(output, name))


def _timm_info(name: str, splits: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "splits": {
            split: {
                "name": split,
                "num_samples": value["samples"],
                "filenames": [shard["name"] for shard in value["shards"]],
                "shard_lengths": [shard["samples"] for shard in value["shards"]],
            }
            for split, value in splits.items()
        },
    }


def _progress_bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="packing", disable=not progress, file=sys.stderr)
