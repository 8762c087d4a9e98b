"""One entry for every export format a tensor-in, tensor-out model takes: ONNX, `.pt2` and
safetensors through `twins.export.engine`, OpenVINO IR through `twins.export.openvino` (with
its optional int8 quantisation, `twins.export.int8`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from twins.errors import TwinsError
from twins.export.engine import ExportResult, check_traced_size, export_metadata, export_model


def export_as(
    model: nn.Module,
    format: str,
    output: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    image_size: int = 224,
    check: bool = True,
    quantize: Callable[[Any], tuple[Any, list[str]]] | None = None,
    **hub: Any,
) -> ExportResult:
    """Export `model` as `format` with the file's class names, preprocessing and data set
    metadata; `quantize` (`twins.export.int8.int8_quantizer`) for an int8 OpenVINO model;
    `hub`: `export_model`'s `hub_config` and `record` for the Hub layout."""
    if format != "openvino":
        if quantize is not None:
            raise TwinsError(
                f"int8 quantisation is offered for OpenVINO models, not {format}: export with "
                "format openvino, or leave int8 out",
                argument="int8",
            )
        return export_model(
            model, format, output, metadata, image_size=image_size, check=check, **hub
        )
    from twins.export.openvino import export_openvino

    check_traced_size(model, format, image_size)
    described = export_metadata(
        model, metadata.get("class_names"), metadata.get("preprocessing"), metadata.get("dataset")
    )
    return export_openvino(
        model, output, described, image_size=image_size, check=check, quantize=quantize
    )
