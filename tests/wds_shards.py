"""WebDataset tar shards as others publish them, written with webdataset's own `TarWriter`:
timm's layout (`<name>-train-0000.tar`, `<name>-validation-00.tar`, `.jpg`/`.png` + `.cls`, an
`_info.json` with brace patterns) or a plain set with `.txt` labels."""

from __future__ import annotations

import json
from pathlib import Path

import webdataset as wds

TIMM_SPLIT = {"train": "train", "val": "validation"}


def folder_samples(folder: Path, split: str) -> list[tuple[str, bytes, int, str]]:
    """(key, image bytes, class index, class name) of the ImageFolder's split, sorted."""
    classes = sorted(p.name for p in (folder / "train").iterdir())
    return [
        (f"{name}_{path.stem}", path.read_bytes(), index, name)
        for index, name in enumerate(classes)
        for path in sorted((folder / split / name).iterdir())
    ]


def write_timm_shards(folder: Path, output: Path, per_shard: int = 10, name: str = "tiny") -> Path:
    """The ImageFolder at `folder` as timm-layout shards in `output`, `per_shard` samples each
    (`.png` + `.cls`), with timm's `_info.json`."""
    output.mkdir(parents=True, exist_ok=True)
    info: dict = {"name": name, "splits": {}}
    for split, word in TIMM_SPLIT.items():
        samples = folder_samples(folder, split)
        chunks = [samples[i : i + per_shard] for i in range(0, len(samples), per_shard)]
        for number, chunk in enumerate(chunks):
            with wds.TarWriter(str(output / f"{name}-{word}-{number:04d}.tar")) as sink:
                for key, image, target, _ in chunk:
                    sink.write({"__key__": key, "png": image, "cls": target})
        info["splits"][word] = {
            "name": word,
            "num_samples": len(samples),
            "filenames": f"{name}-{word}-{{0000..{len(chunks) - 1:04d}}}.tar",
            "shard_lengths": [len(c) for c in chunks],
        }
    (output / "_info.json").write_text(json.dumps(info))
    return output
