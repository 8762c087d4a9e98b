"""`twins benchmark --compare openvino`: our eager model against its OpenVINO IR, float32 and
int8, on OpenVINO's CPU plugin with as many threads as torch uses, on the same input batch.

The IR is converted as `twins export --format openvino` converts it (`twins.export.openvino`)
and compiled in float32 (the plugin's bf16 default on AMX CPUs is another precision). No data
is given to a benchmark, so the int8 model is calibrated on random normal inputs of the
benchmark's shape: its speed is that of a real int8 model, its accuracy is not measured here
(`twins export --int8 --calibration DIR` measures it on real images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Random batches NNCF calibrates the benchmark's int8 model on.
CALIBRATION_BATCHES = 4
INT8_NOTE = "int8 calibrated on random inputs (speed only; its accuracy is not measured)"


def openvino_steps(
    model: nn.Module, images: torch.Tensor, threads: int
) -> dict[str, Callable[[], None]]:
    """{"openvino": float32 step, "openvino_int8": int8 step}, each one inference of `images`."""
    from twins.export.openvino import compile_model, convert, progress_on_stderr, require

    nncf = require("nncf")
    converted = convert(model, images.shape[-1])
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(images.shape, generator=generator).numpy() for _ in range(CALIBRATION_BATCHES)
    ]
    with progress_on_stderr():
        quantized = nncf.quantize(
            converted,
            nncf.Dataset(batches),
            subset_size=CALIBRATION_BATCHES,
            model_type=nncf.ModelType.TRANSFORMER,
        )
    inputs = images.cpu().numpy()
    steps = {}
    for name, ir in (("openvino", converted), ("openvino_int8", quantized)):
        request = compile_model(ir, threads).create_infer_request()
        steps[name] = _step(request, inputs)
    return steps


def _step(request, inputs) -> Callable[[], None]:
    def infer() -> None:
        request.infer([inputs])

    return infer
