"""An OpenVINO IR written by `twins export --format openvino` run as its eager model is: a batch
in, the same outputs out, on OpenVINO's CPU plugin in float32 (an int8 model: its quantised
layers in int8, the rest in float32), with the metadata the export put into its rt_info.

The outputs follow the graph's output names (`twins.export.openvino`): "logits" (or any one
output) gives the classifier's N x K tensor, "out" a segmenter's dict {"out": N x K x H x W}, and a detector's
graph (one image in: `twins.tasks.detect.export`) gives, image by image, torchvision's list of
dicts (`boxes`, `labels`, `scores`, `masks`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from twins.errors import TwinsError
from twins.export.openvino import (
    compile_model,
    int8_record,
    is_openvino_file,
    openvino_metadata,
    require,
    xml_path,
)

# Graph outputs that are one tensor of the batch: the classifier's and the segmenter's.
WHOLE_BATCH_OUTPUTS = ("logits", "out")


def is_openvino_model(path: str | os.PathLike) -> bool:
    """Whether `path` is an OpenVINO IR (.xml with its .bin) or a folder holding one."""
    return is_openvino_file(path)


class OpenVINOModel:
    """`OpenVINOModel(path)(batch)`: the IR at `path` (its .xml, or a folder holding one).
    `arch` names the model where the file carries no metadata (an IR from another tool);
    `threads`: the CPU plugin's inference threads (default: its own choice); `device`: "auto"
    or "cpu" (OpenVINO's CPU plugin; it has no CUDA one)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        arch: str | None = None,
        threads: int | None = None,
        device: str = "auto",
    ) -> None:
        if device not in ("auto", "cpu"):
            raise TwinsError(
                f"an OpenVINO model runs on the CPU, not {device}: use device cpu (or auto), or "
                "the ONNX or .pt2 export on a GPU",
                argument="device",
            )
        openvino = require("openvino")
        self.path = xml_path(path)
        model = openvino.Core().read_model(os.fspath(self.path))
        self.metadata: dict[str, Any] = openvino_metadata(model)
        if not self.metadata.get("arch"):
            if not arch:
                raise TwinsError(
                    f"{self.path} carries no twins metadata (it was not written by twins "
                    "export): pass arch, the model it holds, or export it again with twins export",
                    argument="arch",
                )
            self.metadata["arch"] = arch
        # How it was quantised and what it scored (None for a float32 model).
        self.int8 = int8_record(model)
        self.compiled = compile_model(model, threads)
        # An IR of another tool may leave its outputs unnamed.
        self.output_names = [
            next(iter(sorted(output.get_names())), "") for output in self.compiled.outputs
        ]

    def __call__(self, batch: torch.Tensor | Sequence[torch.Tensor]) -> Any:
        """A batch (N x 3 x H x W) of a classifier or a segmenter; a detector's images, as a
        batch or as a list of 3 x H x W images (of any sizes), one at a time."""
        if len(self.output_names) == 1 or self.output_names[0] in WHOLE_BATCH_OUTPUTS:
            images = _array(batch)
            result = torch.from_numpy(np.asarray(self.compiled(images)[0]))
            return {"out": result} if self.output_names[0] == "out" else result
        return [self._detections(_array(image)) for image in batch]

    def _detections(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        found = self.compiled(image).values()
        return {
            name: torch.from_numpy(np.asarray(value))
            for name, value in zip(self.output_names, found, strict=True)
        }


def _array(images: torch.Tensor) -> np.ndarray:
    return images.detach().cpu().float().numpy()
