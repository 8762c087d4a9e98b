"""ONNX models (`twins export --format onnx`) run by ONNX Runtime, called as the eager model.

The graph's interface says how to call it: one input of rank 4 takes a batch (a classifier, a
segmenter), one of rank 3 takes one image (a detector, run image by image). Outputs are named
by the export: `logits` is given back as the tensor the classifiers return, any other single
output by name in a dict (a segmenter's `{"out": ...}`), a detector's as a dict per image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins.device import select_device
from twins.export.engine import exported_metadata
from twins.export.runtimes.artifact import described_metadata

# Outputs given back bare, as the eager models return them (a classifier's forward).
BARE_OUTPUTS = ("logits",)


class OnnxArtifact:
    """An ONNX model in an ONNX Runtime session: CUDA where asked for and available."""

    def __init__(self, path: Path, *, device: str = "auto") -> None:
        import onnxruntime

        self.metadata = described_metadata(path, exported_metadata(path))
        target = select_device(device)
        providers: list[Any] = ["CPUExecutionProvider"]
        # A CPU-only onnxruntime (the `onnxruntime` package) runs on the CPU whatever is asked.
        if (
            target.type == "cuda"
            and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        ):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": target.index or 0}))
        self.session = onnxruntime.InferenceSession(os.fspath(path), providers=providers)
        (graph_input,) = self.session.get_inputs()
        self.input_name = graph_input.name
        self.per_image = len(graph_input.shape) == 3
        self.output_names = [output.name for output in self.session.get_outputs()]

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {self.input_name: np.ascontiguousarray(images.detach().float().cpu().numpy())}
        outputs = self.session.run(None, feed)
        return {
            name: torch.from_numpy(np.asarray(value))
            for name, value in zip(self.output_names, outputs, strict=True)
        }

    def __call__(self, images: Any) -> Any:
        if self.per_image:
            return [self._run(image) for image in images]
        outputs = self._run(images)
        if len(outputs) == 1 and self.output_names[0] in BARE_OUTPUTS:
            return outputs[self.output_names[0]]
        return outputs
