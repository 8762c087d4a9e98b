"""Deployment exports: ONNX (checked in onnxruntime), torch.export `.pt2`, safetensors weights,
and the Hugging Face Hub layout (`twins.export.hub`: a folder, "hf").

ONNX and `.pt2` graphs take any batch, height and width from the model's smallest input side
(`twins.models.smallest_image_size`: 32 pixels for the variants) up: they are traced by
`torch.export` with symbolic sizes, so the padding and masking of SVT's windows follow the
input size instead of being frozen at the size used for tracing. Symbolic sizes are treated
"size-obliviously" (torch.fx.experimental._config.backed_size_oblivious) so that a derived size
that happens to be 1 at some input (one window per row, a 1x1 last stage) is not baked in.

While tracing, torch's fake convolution picks its output's memory layout from the input's
strides, which asks whether sizes are 1: the answers became guards that held the batch above
1 and the sides at 64 pixels and more (the last stage's map above 1x1), though the layout
changes no value. The layout choice is left out while tracing (`_traced_sizes`), so a `.pt2`
program's guards are the declared ranges only: it runs a single image, and the smallest one.

Every export carries the model's metadata (`twins.weights.metadata`: arch, model_args, class
names, and the preprocessing its images need): ONNX in `metadata_props` (one JSON value per
key), `.pt2` as the extra file `twins_metadata.json`, safetensors in its metadata;
`exported_metadata(path)` reads it back from ONNX and `.pt2` files.

Each task exports its models through this engine (`twins.tasks.<task>.export`): a segmenter
the same way, its graph's output the "out" logits (N x K x H x W at the input size), its
metadata the data set's palette and label values ("dataset") too; a detector as
`twins.tasks.detect.export` says.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx.experimental._config as fx_config
from torch import nn

from twins.atomic import atomic_path
from twins.errors import TwinsError
from twins.export.hub import HubConfig, export_hub_folder
from twins.models import smallest_image_size
from twins.weights import StateDict, model_metadata, save_weights
from twins.weights.metadata import from_strings, to_strings
from twins.weights.pt2 import METADATA_FILE, pt2_metadata
from twins.weights.save import check_destination

EXPORT_FORMATS = ("onnx", "pt2", "safetensors", "hf", "openvino")
# The extension each export format's files carry (readers and other tools go by it); "hf" is a
# folder (`twins.export.hub`); an OpenVINO model's .bin is written beside its .xml
# (`twins.export.openvino`).
EXTENSIONS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors", "openvino": ".xml"}
MAX_SIDE = 8192
# The largest image_size to trace at: tracing adds 64 pixels (see `trace_input`).
MAX_TRACE_SIDE = MAX_SIDE - 64
# Relative tolerance (max |difference| / max |logit|) of an export against eager PyTorch.
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    format: str
    # Checked input shape -> max |export - PyTorch| / max |PyTorch| (empty when not checked).
    differences: dict[tuple[int, ...], float] = field(default_factory=dict)


def trace_input(image_size: int) -> torch.Tensor:
    """Input used for tracing: batch 2 and unequal sides, so that no size is taken for a constant."""
    return torch.randn(2, 3, image_size + 32, image_size + 64)


def smallest_side(model: nn.Module) -> int:
    """The smallest input side the model takes, the lower bound of the exported sizes: the
    model's `smallest_export_side` where it says (a task's export wrapper), else its
    backbone's."""
    said = getattr(model, "smallest_export_side", None)
    return said if said is not None else smallest_image_size(model.arch, model.model_args)


def uneven_shape(image_size: int, smallest: int) -> tuple[int, int, int, int]:
    """A batch of 3 of unequal sides, near `image_size`, whose window grids need padding."""
    return (3, 3, max(smallest, image_size - 24), image_size + 40)


def check_shapes(image_size: int, smallest: int) -> list[tuple[int, int, int, int]]:
    """Shapes the exports are checked at: square, and one whose window grids need padding."""
    return [(1, 3, image_size, image_size), uneven_shape(image_size, smallest)]


def dynamic_shapes(smallest: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=smallest, max=MAX_SIDE)
    width = torch.export.Dim("width", min=smallest, max=MAX_SIDE)
    return {"x": {0: batch, 2: height, 3: width}}


@contextlib.contextmanager
def _traced_sizes() -> Iterator[None]:
    """Trace with symbolic sizes that nothing but the computation constrains (see the module
    notes): size-oblivious, and without the convolutions' memory-layout choice."""
    choose_layout = torch._C._conv_determine_backend_memory_format
    torch._C._conv_determine_backend_memory_format = _keep_layout
    try:
        with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
            yield
    finally:
        torch._C._conv_determine_backend_memory_format = choose_layout


def _keep_layout(*args: Any) -> None:
    """No memory format to convert a fake convolution's output to."""
    return None


def relative_difference(result: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(result - reference).max() / max(np.abs(reference).max(), 1e-12))


def _check(differences: dict, what: str) -> None:
    worst = max(differences.values())
    if worst > TOLERANCE:
        raise TwinsError(f"the {what} export differs from PyTorch by {worst:.2e} (relative)")


def _prepare(model: nn.Module) -> nn.Module:
    return model.eval().float().cpu()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image_size: int = 224,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    check: bool = True,
    dataset: Mapping[str, Any] | None = None,
) -> ExportResult:
    """ONNX with dynamic batch, height and width, carrying the model's metadata; checked in
    onnxruntime against PyTorch. Its output is "logits" (a segmenter's: "out")."""
    model = _prepare(model)
    with _traced_sizes():
        program = torch.onnx.export(
            model,
            (trace_input(image_size),),
            dynamo=True,
            input_names=["images"],
            output_names=[getattr(model, "output_name", "logits")],
            dynamic_shapes=dynamic_shapes(smallest_side(model)),
            verbose=False,
        )
    program.model.metadata_props.update(
        to_strings(export_metadata(model, class_names, preprocessing, dataset))
    )
    with atomic_path(path) as temporary:
        program.save(temporary)
    result = ExportResult(Path(path), "onnx")
    if check:
        shapes = check_shapes(image_size, smallest_side(model))
        result.differences = check_onnx(model, path, shapes)
        _check(result.differences, "ONNX")
    return result


def check_onnx(
    model: nn.Module, path: str | os.PathLike, shapes: list[tuple[int, ...]]
) -> dict[tuple[int, ...], float]:
    """Relative difference of onnxruntime (CPU) against PyTorch at each shape."""
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    differences = {}
    for shape in shapes:
        images = torch.randn(shape)
        with torch.no_grad():
            reference = model(images).numpy()
        (result,) = session.run(None, {name: images.numpy()})
        differences[tuple(shape)] = relative_difference(result, reference)
    return differences


def export_pt2(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image_size: int = 224,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    check: bool = True,
    dataset: Mapping[str, Any] | None = None,
) -> ExportResult:
    """A `torch.export` program with dynamic sizes, carrying the model's metadata;
    `torch.export.load(path).module()` runs it."""
    model = _prepare(model)
    smallest = smallest_side(model)
    try:
        with _traced_sizes():
            program = torch.export.export(
                model, (trace_input(image_size),), dynamic_shapes=dynamic_shapes(smallest)
            )
    except Exception as error:  # torch.export fails in many ways, each pages long
        what = getattr(model, "arch", None) or type(model).__name__
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TwinsError(
            f"torch.export cannot export {what} for every input size ({type(error).__name__}: "
            f"{reason}); torch's full report is kept as this error's cause"
        ) from error
    metadata = json.dumps(export_metadata(model, class_names, preprocessing, dataset))
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.export.save(program, file, extra_files={METADATA_FILE: metadata})
    result = ExportResult(Path(path), "pt2")
    if check:
        loaded = torch.export.load(os.fspath(path)).module()
        shapes = [(1, 3, smallest, smallest), uneven_shape(image_size, smallest)]
        for shape in shapes:
            images = torch.randn(shape)
            with torch.no_grad():
                reference, exported = model(images).numpy(), loaded(images).numpy()
            result.differences[tuple(shape)] = relative_difference(exported, reference)
        _check(result.differences, "torch.export")
    return result


def export_safetensors(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Release weights: the model's tensors only, with the metadata that rebuilds and feeds
    the model."""
    metadata = export_metadata(model, class_names, preprocessing, dataset)
    save_weights(StateDict(model.state_dict(), metadata), path)
    return ExportResult(Path(path), "safetensors")


def export_metadata(
    model: nn.Module,
    class_names: Sequence[str] | None,
    preprocessing: Mapping[str, Any] | None,
    dataset: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The model's metadata, and a dense task's "dataset" (palette, label values) where given."""
    metadata = model_metadata(model, class_names, preprocessing)
    return metadata | ({"dataset": dict(dataset)} if dataset else {})


def exported_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata an ONNX or `.pt2` export carries (empty when it has none)."""
    path = Path(path)
    if zipfile.is_zipfile(path):  # a .pt2 archive: read its extra file, not the whole program
        return pt2_metadata(path)
    import onnx

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as error:  # onnx raises its own DecodeError types for files it cannot parse
        raise TwinsError(f"{path}: neither a .pt2 archive nor an ONNX model") from error
    return from_strings({prop.key: prop.value for prop in model.metadata_props})


def check_extension(output: str | os.PathLike, format: str) -> None:
    """Refuse a file name whose extension says another format than the one written (for "hf",
    a folder: an existing file, or a name with a file format's extension)."""
    suffix = Path(output).suffix.lower()
    if format == "hf":
        if Path(output).is_file() or suffix in EXTENSIONS.values():
            raise TwinsError(
                f"{output}: an hf export is a folder (config.json, model.safetensors, "
                "README.md): name a new or existing folder",
                argument="output",
            )
        return
    if suffix == EXTENSIONS[format]:
        return
    named = next((name for name, ext in EXTENSIONS.items() if ext == suffix), None)
    instead = f" (or format {named!r}, which its name says)" if named else ""
    raise TwinsError(
        f"{output}: {format} exports are *{EXTENSIONS[format]} files, not "
        f"{suffix or 'files without an extension'}: name it "
        f"{Path(output).with_suffix(EXTENSIONS[format])}{instead}",
        argument="output",
    )


def check_export_request(
    checkpoint: str | os.PathLike, format: str, output: str | os.PathLike, image_size: int
) -> None:
    """Refuse an unknown format, a file name of another format, an image size that cannot be
    traced, or an output onto the checkpoint, before anything is read."""
    if format not in EXPORT_FORMATS:
        raise TwinsError(
            f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}",
            argument="format",
        )
    check_extension(output, format)
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise TwinsError(
            f"image_size must be a whole number, not {image_size!r}", argument="image_size"
        )
    if not 1 <= image_size <= MAX_TRACE_SIDE:
        raise TwinsError(
            f"image_size {image_size} cannot be traced and checked: use the model's smallest "
            f"input side (32 for the variants) to {MAX_TRACE_SIDE}",
            argument="image_size",
        )
    check_destination(checkpoint, output)


def check_traced_size(model: nn.Module, format: str, image_size: int) -> None:
    """Refuse tracing a graph at a side below the smallest input the model takes."""
    smallest = smallest_side(model) if format != "safetensors" else 1
    if image_size < smallest:
        raise TwinsError(
            f"image_size {image_size} is below the smallest input {model.arch} takes: use "
            f"{smallest} to {MAX_TRACE_SIDE} (the export then takes any side from {smallest} "
            f"to {MAX_SIDE})",
            argument="image_size",
        )


def export_model(
    model: nn.Module,
    format: str,
    output: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
    hub_config: HubConfig | None = None,
    record: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export `model` (a tensor in, a tensor out: a task's wrapper where its forward gives
    more) as `format` (ONNX, `.pt2` or safetensors; OpenVINO: `twins.export.formats`), with the
    file's class names, preprocessing and data set metadata; "hf" writes the Hub layout
    (`twins.export.hub`: `hub_config` the task's config.json, `record` the training
    checkpoint's run, for the model card)."""
    if format == "hf":
        described = export_metadata(
            model,
            metadata.get("class_names"),
            metadata.get("preprocessing"),
            metadata.get("dataset"),
        )
        folder = export_hub_folder(model, output, described, hub_config=hub_config, record=record)
        return ExportResult(folder, "hf")
    check_traced_size(model, format, image_size)
    described = {
        "class_names": metadata.get("class_names"),
        "preprocessing": metadata.get("preprocessing"),
        "dataset": metadata.get("dataset"),
    }
    if format == "onnx":
        return export_onnx(model, output, image_size=image_size, check=check, **described)
    if format == "pt2":
        return export_pt2(model, output, image_size=image_size, check=check, **described)
    return export_safetensors(model, output, **described)
