"""OpenVINO export: an IR model (`model.xml` with its weights in `model.bin` beside it) of any
batch, height and width, carrying the model's metadata, checked against PyTorch.

The IR is converted from the torch module by OpenVINO's PyTorch frontend
(`openvino.convert_model` on the module, traced at `trace_input`'s size with batch, height and
width left dynamic). Converting our ONNX export instead was measured (224 px, one thread, a
shared 2-core machine, one short run each): the frontend's IR was faster at batch 1 (PCPVT-S
7.5 against 7.3 images/s, SVT-S 1.57 against 1.45), the ONNX one at batch 16 (PCPVT-S 6.4
against 5.0, SVT-S 1.29 against 1.17); timed again in alternated rounds (PCPVT-S, batch 16,
`twins.benchmark.timing.alternate`), the frontend's IR gave 4.25, 5.01, 5.19 images/s and the
ONNX one 4.44, 4.58, 5.19: no faster. The frontend converts in a fifth of the time (SVT-S: 24
against 137 s, most of it the ONNX exporter), so it is the one used. The check runs the IR in OpenVINO's CPU plugin in float32 (`COMPILE_FP32`): on CPUs
with AMX or AVX-512 BF16 the plugin otherwise computes in bfloat16, which is no check of the
conversion (about 1e-2 relative).

The metadata (`twins.weights.metadata`: arch, model_args, class names, preprocessing, a dense
task's "dataset") is kept in the model's `rt_info` under "twins", one JSON value per key as in
ONNX `metadata_props`; `openvino_metadata` reads it back. An int8 model (`twins.export.int8`)
also says how it was quantised and what it scored, under "twins_int8".

The .bin is written first and the .xml last, each to a temporary name renamed into place: a
reader that finds the .xml finds its whole .bin.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twins.atomic import atomic_path
from twins.errors import TwinsError
from twins.export.engine import (
    ExportResult,
    check_shapes,
    relative_difference,
    smallest_side,
    trace_input,
)
from twins.weights.metadata import from_strings, to_strings

# The rt_info sections of the metadata and of an int8 model's quantisation record.
METADATA_SECTION = "twins"
INT8_SECTION = "twins_int8"
INPUT_NAME = "images"
# The CPU plugin's settings for a float32 result (its default on bf16-capable CPUs is bf16).
COMPILE_FP32 = {"INFERENCE_PRECISION_HINT": "f32"}
# Relative tolerance of the float32 IR against eager PyTorch: OpenVINO's CPU kernels reorder
# sums differently from oneDNN's and ours (measured: 1e-6 for the variants).
TOLERANCE = 1e-4


def require(module: str) -> Any:
    """`openvino` or `nncf`, imported where first needed (an optional extra); when missing, one
    line that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise TwinsError(
            f"{module} is not installed: pip install 'twins[openvino]' (OpenVINO export, int8 "
            "and --compare openvino need openvino and nncf)"
        ) from error


@dataclass
class OpenVINOExportResult(ExportResult):
    # What the int8 check measured, a line each (empty for a float32 export).
    lines: list[str] = field(default_factory=list)


def convert(model: nn.Module, image_size: int) -> Any:
    """The `openvino.Model` of `model` (a tensor in, a tensor out), its input named "images" and
    its output as the ONNX export names it, batch, height and width dynamic."""
    openvino = require("openvino")

    model = model.eval().float().cpu()
    # The frontend traces with torch.jit.trace: its deprecation notice and the tracer's notes
    # on the model's input checks (Python booleans, constant in a trace) are no news to users.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = openvino.convert_model(
            model,
            example_input=trace_input(image_size),
            input=[openvino.PartialShape([-1, 3, -1, -1])],
        )
    converted.inputs[0].get_tensor().set_names({INPUT_NAME})
    converted.outputs[0].get_tensor().set_names({getattr(model, "output_name", "logits")})
    return converted


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """NNCF draws its progress bars on stdout, where `--json` prints its one object."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def describe(converted: Any, metadata: Mapping[str, Any]) -> None:
    """Put `metadata` into the model's rt_info (one JSON string per key)."""
    for key, value in to_strings(metadata).items():
        converted.set_rt_info(value, [METADATA_SECTION, key])


def save(converted: Any, path: str | os.PathLike) -> Path:
    """Write the IR as `path` (.xml) and its .bin beside it, weights in float32, the .bin first
    (see the module's notes)."""
    openvino = require("openvino")

    xml = Path(path)
    with atomic_path(xml) as xml_temporary, atomic_path(xml.with_suffix(".bin")) as bin_temporary:
        written_bin = xml_temporary.with_suffix(".bin")  # save_model names it after the .xml
        try:
            openvino.save_model(converted, os.fspath(xml_temporary), compress_to_fp16=False)
            os.replace(written_bin, bin_temporary)
        finally:
            with contextlib.suppress(OSError):
                written_bin.unlink()
    return xml


def compile_model(model_or_path: Any, threads: int | None = None, fp32: bool = True) -> Any:
    """The model compiled for OpenVINO's CPU plugin (`threads`: its inference threads)."""
    openvino = require("openvino")

    config: dict[str, Any] = dict(COMPILE_FP32) if fp32 else {}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    source = os.fspath(model_or_path) if isinstance(model_or_path, Path) else model_or_path
    return openvino.Core().compile_model(source, "CPU", config)


def check_openvino(
    model: nn.Module, compiled: Any, shapes: list[tuple[int, ...]]
) -> dict[tuple[int, ...], float]:
    """Relative difference of the compiled IR against PyTorch at each shape."""
    differences = {}
    for shape in shapes:
        images = torch.randn(shape)
        with torch.no_grad():
            reference = model(images).numpy()
        result = np.asarray(compiled(images.numpy())[0])
        differences[tuple(shape)] = relative_difference(result, reference)
    return differences


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
    quantize: Callable[[Any], tuple[Any, list[str]]] | None = None,
) -> OpenVINOExportResult:
    """The IR of `model` with `metadata` (`twins.export.engine.export_metadata`'s), checked in float32
    against PyTorch at `check_shapes`; `quantize(converted) -> (int8 model, lines)`
    (`twins.export.int8`) turns it into the int8 model written instead, whose `lines` say
    what it scored. Nothing is written when the check or the quantisation refuses."""
    model = model.eval().float().cpu()
    converted = convert(model, image_size)
    result = OpenVINOExportResult(Path(path), "openvino")
    if check:
        shapes = check_shapes(image_size, smallest_side(model))
        result.differences = check_openvino(model, compile_model(converted), shapes)
        worst = max(result.differences.values())
        if worst > TOLERANCE:
            raise TwinsError(f"the OpenVINO export differs from PyTorch by {worst:.2e} (relative)")
    if quantize is not None:
        converted, result.lines = quantize(converted)
    describe(converted, metadata)
    save(converted, path)
    return result


def is_openvino_file(path: str | os.PathLike) -> bool:
    """Whether `path` names an OpenVINO IR (.xml) with its .bin, or a folder holding one."""
    return _xml_of(Path(path)) is not None


def xml_path(path: str | os.PathLike) -> Path:
    """The IR's .xml that `path` names (itself, or the one .xml in a folder)."""
    found = _xml_of(Path(path))
    if found is None:
        raise TwinsError(
            f"{path}: no OpenVINO model (a .xml with its .bin beside it, or a folder holding "
            "one); name the .xml that twins export --format openvino wrote",
            argument="checkpoint",
        )
    return found


def _xml_of(path: Path) -> Path | None:
    if path.is_dir():
        found = [xml for xml in sorted(path.glob("*.xml")) if xml.with_suffix(".bin").is_file()]
        return found[0] if len(found) == 1 else None
    if path.suffix.lower() == ".xml" and path.is_file() and path.with_suffix(".bin").is_file():
        return path
    return None


def openvino_metadata(converted: Any) -> dict[str, Any]:
    """The metadata in an `openvino.Model`'s rt_info (empty when it has none)."""
    info = converted.get_rt_info()
    if METADATA_SECTION not in info:
        return {}
    section = info[METADATA_SECTION]
    return from_strings({key: value.astype(str) for key, value in section.items()})


def int8_record(converted: Any) -> dict[str, Any] | None:
    """What an int8 model's rt_info says of its quantisation (None for a float32 model)."""
    info = converted.get_rt_info()
    if INT8_SECTION not in info:
        return None
    return {key: json.loads(value.astype(str)) for key, value in info[INT8_SECTION].items()}
