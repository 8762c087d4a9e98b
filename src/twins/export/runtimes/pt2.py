"""`.pt2` programs (`twins export --format pt2`) run by `torch.export.load`, called as the
eager model: a classifier's program gives its logits (N x K), a segmenter's its "out" logits
(N x K x H x W), given back as the segmenters' `{"out": ...}`.

Loading never runs code from the file: `torch.export.load` unpickles entries stored as pickles
(tensor subclasses, script and opaque objects, legacy constants) and falls back to
`weights_only=False` for example inputs it cannot read safely. A Twins program holds none of
these, so an archive that does is refused before loading, and the load itself runs with
`TORCH_FORCE_WEIGHTS_ONLY_LOAD` set, which turns every `torch.load` inside into a safe one.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from twins.errors import TwinsError
from twins.export.runtimes.artifact import described_metadata
from twins.weights.pt2 import pt2_metadata

# Archive entries that torch.export.load unpickles.
PICKLED_NAMES = ("custom_obj", "opaque_obj")
PAYLOAD_CONFIGS = ("model_weights_config.json", "model_constants_config.json")


def check_no_pickles(path: Path) -> None:
    """TwinsError where loading the archive would unpickle something."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            name = member.rsplit("/", 1)[-1]
            pickled = name.startswith(PICKLED_NAMES) or (
                "/data/constants/" in member and name.endswith(".pt")
            )
            if name.endswith(PAYLOAD_CONFIGS):
                entries = json.loads(archive.read(member)).get("config", {}).values()
                pickled = any(entry.get("use_pickle") for entry in entries)
            if pickled:
                raise TwinsError(
                    f"{path}: holds pickled objects ({member}), which no program twins export "
                    "writes holds and which loading would run: export it again",
                    argument="checkpoint",
                )


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


class Pt2Artifact:
    """A `.pt2` program's module, on the device asked for."""

    def __init__(self, path: Path, *, device: str = "auto") -> None:
        from twins.device import select_device

        self.metadata = described_metadata(path, pt2_metadata(path))
        check_no_pickles(path)
        try:
            with _weights_only_loads():
                program = torch.export.load(os.fspath(path))
        except Exception as error:  # torch's own errors for a damaged or foreign archive
            raise TwinsError(
                f"{path}: torch.export.load cannot read it ({type(error).__name__}); export "
                "it again",
                argument="checkpoint",
            ) from error
        self.device = select_device(device)
        self.module = program.module().to(self.device)

    @torch.inference_mode()
    def __call__(self, images: Any) -> Any:
        outputs = self.module(images.to(self.device))
        # A program of one 4-D output is a segmenter's: per-pixel logits, named as its dict.
        return {"out": outputs} if outputs.dim() == 4 else outputs
