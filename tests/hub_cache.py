"""A Hugging Face Hub cache folder laid out as huggingface_hub lays it out
(`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`, each snapshot file a relative
link to its blob, named by its content's sha256 as the Hub's LFS files are), so that
`hf_hub_download` finds a repository there without the network."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_hub_cache(
    cache: Path, repository: str, files: dict[str, bytes], revision: str = "main"
) -> str:
    """Put `files` (name -> content) in `cache` as the snapshot of `repository` that `revision`
    names; returns the snapshot's commit hash."""
    folder = cache / f"models--{repository.replace('/', '--')}"
    listing = "".join(f"{name}:{hashlib.sha256(data).hexdigest()}" for name, data in files.items())
    commit = hashlib.sha1(f"{repository}@{revision}:{listing}".encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    return commit
