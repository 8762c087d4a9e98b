"""Post-training int8 quantisation of an OpenVINO model with NNCF, kept only when the task's
metric holds.

The calibration folder's samples (`twins.export.calibration.CalibrationSet`, in the task's
evaluation preprocessing) are split by a seeded shuffle: half calibrate `nncf.quantize`
(transformer mode: NNCF's scheme for attention models, which keeps softmax, LayerNorm and GELU
in float), the other half is held out and scored with the float32 model and then with the int8
one. A drop of more than `max_drop` points refuses the export, naming both figures; the int8
model records them in its rt_info ("twins_int8").
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twins.errors import TwinsError
from twins.export.calibration import CalibrationSet
from twins.export.openvino import INT8_SECTION, compile_model, progress_on_stderr, require

# Fewer images than this cannot calibrate and also score a held-out half.
MIN_IMAGES = 16
# NNCF's default subset: more calibration images change the ranges little.
MAX_CALIBRATION_IMAGES = 300
MAX_DROP = 0.5
SPLIT_SEED = 0


def split(samples: Sequence[Any], seed: int = SPLIT_SEED) -> tuple[list[Any], list[Any]]:
    """(calibration part, held-out part): halves of a seeded shuffle, the calibration part at
    most `MAX_CALIBRATION_IMAGES`."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return order[:half][:MAX_CALIBRATION_IMAGES], order[half:]


def check_count(calibration: CalibrationSet, folder: str) -> None:
    found = len(calibration.samples)
    if found < MIN_IMAGES:
        raise TwinsError(
            f"calibration folder {folder} has {found} usable image{'s' * (found != 1)}; int8 "
            f"needs at least {MIN_IMAGES} (half calibrate, half measure the {calibration.metric} "
            "drop): add images of the data the model will see",
            argument="calibration",
        )


def score(compiled: Any, calibration: CalibrationSet, held_out: Sequence[Any]) -> float:
    """The task's metric (in %) of a compiled OpenVINO model on the held-out samples."""
    outputs = []
    for sample in held_out:
        inputs, target = calibration.load(sample)
        outputs.append((np.asarray(compiled(inputs.numpy())[0]), target))
    return calibration.score(outputs)


def int8_quantizer(
    calibration: CalibrationSet, folder: str, max_drop: float = MAX_DROP
) -> Callable[[Any], tuple[Any, list[str]]]:
    """`quantize(float32 openvino.Model) -> (int8 model, report lines)` for
    `twins.export.openvino.export_openvino`; it raises when the drop passes `max_drop`."""
    check_count(calibration, folder)
    calibrate, held_out = split(calibration.samples)

    def quantize(converted: Any) -> tuple[Any, list[str]]:
        nncf = require("nncf")
        before = score(compile_model(converted), calibration, held_out)
        dataset = nncf.Dataset(calibrate, lambda sample: calibration.load(sample)[0].numpy())
        with progress_on_stderr():
            quantized = nncf.quantize(
                converted,
                dataset,
                subset_size=len(calibrate),
                model_type=nncf.ModelType.TRANSFORMER,
            )
        after = score(compile_model(quantized), calibration, held_out)
        drop = before - after
        figures = (
            f"{calibration.metric} on the {len(held_out)} held-out images of {folder}: "
            f"float32 {before:.2f}%, int8 {after:.2f}% (a drop of {drop:.2f} points"
        )
        if drop > max_drop:
            raise TwinsError(
                f"int8 refused: {figures}, more than max_drop {max_drop}); nothing written: "
                "export float32 (without int8), calibrate on more images, or raise max_drop",
                argument="max_drop",
            )
        record = {
            "metric": calibration.metric,
            "float32": before,
            "int8": after,
            "held_out_images": len(held_out),
            "calibration_images": len(calibrate),
        }
        for key, value in record.items():
            quantized.set_rt_info(json.dumps(value), [INT8_SECTION, key])
        return quantized, [f"int8 kept: {figures}, max_drop {max_drop})"]

    return quantize
