"""What a process runs with: the versions of Python and the libraries, the accelerators, the CPU
model and the commit of the source checkout the toolkit runs from (when it runs from one).

Each is read without starting a process and without failing: what cannot be read is None.
"""

from __future__ import annotations

import importlib
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

# The distributions whose versions say how a run computed.
LIBRARIES = ("torch", "torchvision", "timm")


def versions() -> dict[str, str | None]:
    """Python, torch, torchvision, timm and twins; CUDA and cuDNN where torch has them."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        found[name] = _version(name)
    found["twins"] = _twins_version()
    found["cuda"] = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    found["cudnn"] = None if cudnn is None else str(cudnn)
    return found


def accelerators() -> dict[str, Any]:
    """The GPUs this process sees: their count and names."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"count": count, "names": [torch.cuda.get_device_name(i) for i in range(count)]}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit(start: str | Path | None = None) -> str | None:
    """The commit checked out in the git repository holding `start` (this package's source by
    default), read from the files under .git (a worktree's too); None outside a checkout,
    e.g. an installed package."""
    here = Path(start or __file__).resolve()
    for folder in [here, *here.parents]:
        dot_git = folder / ".git"
        if dot_git.exists():
            try:
                return _head_commit(dot_git)
            except (OSError, ValueError):
                return None
    return None


def _head_commit(dot_git: Path) -> str | None:
    git_dir = dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        git_dir = (dot_git.parent / dot_git.read_text().split(":", 1)[1].strip()).resolve()
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head  # a detached HEAD holds the commit itself
    ref = head.split(":", 1)[1].strip()
    common = git_dir  # a worktree keeps its refs in the main repository's folder
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for folder in (git_dir, common):
        if (folder / ref).is_file():
            return (folder / ref).read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split(" ", 1)[0]
    return None


def _version(name: str) -> str | None:
    """The version the module itself reports (torch's says its CUDA build: 2.14.1+cu130),
    else its distribution's; None when it is not installed."""
    try:
        return str(importlib.import_module(name).__version__)
    except (ImportError, AttributeError):
        pass
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _twins_version() -> str | None:
    """The installed distribution's version, else the one this source tree declares (read,
    not imported: the package imports this module's layer, not the other way round)."""
    declared = re.search(
        r'^__version__ = "([^"]+)"', Path(__file__).with_name("__init__.py").read_text(), re.M
    )
    try:
        return metadata.version("twins")
    except metadata.PackageNotFoundError:
        return declared and declared.group(1)
