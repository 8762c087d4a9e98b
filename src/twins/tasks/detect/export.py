"""`twins export` of a detector: what torchvision's detectors can give.

- safetensors: the weights with the metadata that rebuilds the detector (arch, model_args,
  class names, task, and `dataset`: the training annotations' category ids), read back by
  `twins.load_model`.
- hf: the same weights and metadata in the Hugging Face Hub layout, with twins' own
  config.json and a model card (`twins.export.hub`).
- ONNX: torch's TorchScript-based exporter, the one torchvision's detectors are written for
  (their resize, anchors and NMS take its tracing paths): one image (3 x H x W, float in 0..1,
  any height and width) in; the outputs named, in this order, `boxes` (N x 4, x0, y0, x1, y1),
  `labels` (N, int64, 1..K), `scores` (N) and, for Mask R-CNN, `masks` (N x 1 x H x W), as the
  model's dict in evaluation, in the pixels of the image given. `labels` are the model's
  classes, not category ids: label i is the file's metadata `dataset.category_ids[i - 1]`
  (`twins.export.engine.exported_metadata`). A detector trained by the fit loop does not
  resize (`resize_in_model: false`): resize images as its metadata's `preprocessing` says first.
  Checked in onnxruntime against PyTorch at two sizes. The newer torch.export-based exporter
  fails on these models, as `.pt2` does.
- OpenVINO: the ONNX graph above, converted by `openvino.convert_model` (its reader takes
  the detectors' NMS and dynamic sizes), the same inputs and outputs, the metadata in the
  model's rt_info (`twins.export.openvino`); checked in OpenVINO's CPU plugin (float32) against
  PyTorch as the ONNX file is. int8 is not offered for detectors.
- `.pt2`: refused in one line that names what works instead. torch.export (torch 2.14,
  torchvision 0.29, strict or not) stops at the detectors' box selection (score threshold,
  top-k, NMS), whose output sizes depend on the data: torchvision's `batched_nms` picks its
  CPU path by the number of boxes, a guard on a data-dependent size
  (GuardOnDataDependentSymNode), after a minute of tracing.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twins.atomic import atomic_path
from twins.errors import TwinsError
from twins.export.engine import TOLERANCE, ExportResult, relative_difference
from twins.export.hub import export_hub_folder
from twins.weights import StateDict, model_metadata, save_weights
from twins.weights.metadata import to_strings

ONNX_OPSET = 17
# The ONNX outputs, in this order: the keys of torchvision's evaluation dict (masks for
# Mask R-CNN only).
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")


class NamedOutputs(nn.Module):
    """The detector with its one image's dict as a tuple in the order of `names`."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        (found,) = self.model(images)
        return tuple(found[name] for name in self.names)


INSTEAD = (
    "export safetensors (rebuilt by twins.load_model) or onnx (the TorchScript-based exporter, "
    "which torchvision's detectors support)"
)


def detector_metadata(model: nn.Module, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The detector's own metadata, with the file's class names, preprocessing and dataset."""
    described = model_metadata(model, metadata.get("class_names"), metadata.get("preprocessing"))
    return {**described, "dataset": metadata.get("dataset")}


def export_detector(
    model: nn.Module,
    format: str,
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
    record: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export `model` (a detector, with `metadata`: the weights file's) as `format` (`record`:
    the training checkpoint's run, for an "hf" folder's model card)."""
    model = model.eval().float().cpu()
    described = detector_metadata(model, metadata)
    if format == "hf":
        return ExportResult(export_hub_folder(model, path, described, record=record), "hf")
    if format == "safetensors":
        save_weights(StateDict(model.state_dict(), described), path)
        return ExportResult(Path(path), "safetensors")
    if format == "pt2":
        raise _pt2_error(model)
    if format == "openvino":
        return export_detector_openvino(model, path, described, image_size=image_size, check=check)
    return export_detector_onnx(model, path, described, image_size=image_size, check=check)


def export_detector_openvino(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
) -> ExportResult:
    """The OpenVINO IR of the detector's ONNX graph (see the module's notes)."""
    from twins.export.openvino import compile_model, describe, require, save

    openvino = require("openvino")
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "detector.onnx"
        export_detector_onnx(model, onnx_path, metadata, image_size=image_size, check=False)
        converted = openvino.convert_model(onnx_path)
    result = ExportResult(Path(path), "openvino")
    if check:
        compiled = compile_model(converted)
        names = [output.any_name for output in compiled.outputs]

        def run(image: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, compiled(image).values(), strict=True))

        result.differences = compare_detections(model, run, _check_shapes(image_size))
        _check(result.differences, "OpenVINO")
    describe(converted, metadata)
    save(converted, path)
    return result


def _pt2_error(model: nn.Module) -> TwinsError:
    """Why there is no `.pt2` of a detector, and what works instead."""
    return TwinsError(
        f"torch.export cannot export {model.arch}: torchvision's box selection (score threshold, "
        "top-k, NMS) gives outputs whose sizes depend on the data, and its NMS branches on "
        f"their number (GuardOnDataDependentSymNode); {INSTEAD}",
        argument="format",
    )


def export_detector_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
) -> ExportResult:
    """ONNX of one image of any size in, the detections out (see the module's notes)."""
    import onnx

    image = torch.rand(3, image_size, image_size + 32)
    with torch.no_grad():
        produced = set(model([image])[0])
    # torchvision's dicts differ in order (RetinaNet: boxes, scores, labels; Mask R-CNN: boxes,
    # labels, scores, masks): the graph gives one order, named, whatever the head.
    output_names = [name for name in OUTPUT_NAMES if name in produced]
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated, and still the one that exports
            # torchvision's detectors (see the module's notes): its warning is known here.
            warnings.filterwarnings(
                "ignore",
                "You are using the legacy TorchScript-based ONNX export",
                DeprecationWarning,
            )
            torch.onnx.export(
                NamedOutputs(model, output_names).eval(),
                ([image],),
                buffer,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=output_names,
                dynamic_axes={
                    "image": {1: "height", 2: "width"},
                    **{name: {0: "detections"} for name in output_names},
                },
            )
    except Exception as error:  # the exporter's errors run to pages
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TwinsError(
            f"ONNX export of {model.arch} failed ({type(error).__name__}: {first[:160]}); "
            "export safetensors (rebuilt by twins.load_model) instead",
            argument="format",
        ) from error
    program = onnx.load_from_string(buffer.getvalue())
    for key, value in to_strings(metadata).items():
        program.metadata_props.add(key=key, value=value)
    with atomic_path(path) as temporary:
        onnx.save(program, os.fspath(temporary))
    result = ExportResult(Path(path), "onnx")
    if check:
        result.differences = check_detector_onnx(model, path, _check_shapes(image_size))
        _check(result.differences, "ONNX")
    return result


def _check_shapes(image_size: int) -> list[tuple[int, int, int]]:
    return [(3, image_size, image_size), (3, image_size + 40, max(32, image_size - 24))]


def _check(differences: dict[tuple[int, ...], float], what: str) -> None:
    worst = max(differences.values())
    if worst > TOLERANCE:
        raise TwinsError(f"the {what} export differs from PyTorch by {worst:.2e} (relative)")


def check_detector_onnx(
    model: nn.Module, path: str | os.PathLike, shapes: list[tuple[int, int, int]]
) -> dict[tuple[int, ...], float]:
    """Relative difference of the boxes and scores onnxruntime gives against PyTorch's at each
    image shape (`compare_detections`)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run(image: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, {"image": image}), strict=True))

    return compare_detections(model, run, shapes)


def compare_detections(
    model: nn.Module,
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    shapes: list[tuple[int, int, int]],
) -> dict[tuple[int, ...], float]:
    """Relative difference of the boxes and scores `run` (an exported graph: one image in, its
    named outputs out) gives against PyTorch's at each image shape; a different number of
    detections counts as a difference of 1."""
    differences = {}
    for shape in shapes:
        image = torch.rand(shape)
        with torch.no_grad():
            reference = model([image])[0]
        found = run(image.numpy())
        if found["boxes"].shape != tuple(reference["boxes"].shape):
            differences[tuple(shape)] = 1.0
            continue
        order = counterparts(found, {key: value.numpy() for key, value in reference.items()})
        pairs = [(found[key][order], reference[key].numpy()) for key in ("boxes", "scores")]
        differences[tuple(shape)] = max(
            relative_difference(np.asarray(a), b) if b.size else 0.0 for a, b in pairs
        )
    return differences


def counterparts(found: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> list[int]:
    """For each reference detection in turn, the index of its counterpart among `found`: the
    unused one of the same label with the nearest box. Scores that tie to a few ulps (a
    detector that scores many anchors alike) may come out of the two runtimes in either order,
    so detections are compared by what they are, not by their rank."""
    distance = np.abs(reference["boxes"][:, None, :] - found["boxes"][None, :, :]).max(axis=-1)
    distance[reference["labels"][:, None] != found["labels"][None, :]] = np.inf
    order: list[int] = []
    for row in distance:
        row[order] = np.inf
        order.append(int(np.argmin(row)))
    return order
