"""Exported models run as they are: `open_artifact(path)` gives an `Artifact` for any file
`twins export` writes as a graph (ONNX, run by ONNX Runtime; a `.pt2` program, run by
`torch.export.load`; an OpenVINO IR, its `.xml` or a folder holding it, run by OpenVINO's CPU
plugin), with the metadata the file carries (arch, classes, preprocessing, a
dense task's palette or categories: `twins.export.engine`).

An artifact is called as the eager model is on its task's predict path: a batch of images
(N x 3 x H x W, float, normalised as its metadata's preprocessing says) gives a classifier's
logits (N x K) or a segmenter's `{"out": N x K x H x W}`; a detector's graph takes one image at
a time, so it is called with a list of images (3 x H x W, float in 0..1) and gives one dict of
`boxes`, `labels`, `scores` (`masks`) per image, as torchvision's detectors in evaluation.
Each runtime is one module here, found through `RUNTIMES` (the first whose predicate accepts
the file opens it).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path

from twins.errors import TwinsError
from twins.export.openvino import is_openvino_file
from twins.export.runtimes.artifact import Artifact
from twins.weights.pt2 import is_pt2


def is_onnx_model(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" and path.is_file()


def _is_pt2_file(path: Path) -> bool:
    return path.is_file() and is_pt2(path)


# (whether the file is this runtime's, "module:class" that opens it), tried in order.
RUNTIMES: list[tuple[Callable[[Path], bool], str]] = [
    (is_onnx_model, "twins.export.runtimes.onnx:OnnxArtifact"),
    (_is_pt2_file, "twins.export.runtimes.pt2:Pt2Artifact"),
    (is_openvino_file, "twins.export.runtimes.openvino:OpenVINOModel"),
]


def runtime_for(path: str | os.PathLike) -> str | None:
    """The "module:class" of the runtime that runs `path`; None for a file that is no exported
    graph (a weights file: the eager model runs it)."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = Path(path)
    return next((opener for accepts, opener in RUNTIMES if accepts(path)), None)


def is_artifact(path: str | os.PathLike) -> bool:
    return runtime_for(path) is not None


def open_artifact(
    path: str | os.PathLike, *, device: str = "auto", arch: str | None = None
) -> Artifact:
    """The exported model in `path`, on `device` where its runtime can use it; `arch` names
    the model of a file without twins' metadata (an OpenVINO IR from another tool)."""
    opener = runtime_for(path)
    if opener is None:
        raise TwinsError(
            f"{path}: not an exported model (ONNX .onnx, torch.export .pt2 or OpenVINO .xml); "
            "give a file "
            "twins export wrote, or a weights file",
            argument="checkpoint",
        )
    module, name = opener.split(":")
    runtime = getattr(importlib.import_module(module), name)
    if arch is None:
        return runtime(Path(path), device=device)
    if "arch" not in inspect.signature(runtime).parameters:
        raise TwinsError(f"{path} carries the model's metadata: leave arch out", argument="arch")
    return runtime(Path(path), device=device, arch=arch)
