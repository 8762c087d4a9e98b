"""The tasks: classify, segment, detect, each one package with the same module names
(`task`, `heads`, `checkpoint`, `data`, `transforms`, `loss`, `metrics`, `evaluate`,
`predict`, `export`, `demo`, as it needs), over the task-blind engines (`twins.train`,
`twins.export`), which take a `Task` (`twins.train.task`) as an argument.

This module is the one registry: task names to their `Task` (strings, imported when used, so
that the command line's `--help` does not import torch), and the model names: the six variants
(`twins.models`) are classifiers, a dense model is `<head>_<variant>` with a head of a dense
task's `HEADS`. `create_model`, `model_from_weights` and `load_model` build any of them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twins import console
from twins.errors import TwinsError
from twins.tasks import head as heads
from twins.tasks.detect.heads import HEADS as DETECT_HEADS
from twins.tasks.segment.heads import HEADS as SEGMENT_HEADS

if TYPE_CHECKING:
    from torch import nn

    from twins.train.task import Task

TASKS: dict[str, str] = {
    "classify": "twins.tasks.classify.task:ClassifyTask",
    "segment": "twins.tasks.segment.task:SegmentTask",
    "detect": "twins.tasks.detect.task:DetectTask",
}
# Each dense task's heads; a name that starts with none of them is a classifier's.
HEADS_OF_TASK: dict[str, Mapping[str, heads.Head]] = {
    "segment": SEGMENT_HEADS,
    "detect": DETECT_HEADS,
}


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise TwinsError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_of(name: str) -> str:
    """ "classify", "segment" or "detect" for any model name or alias."""
    for task, task_heads in HEADS_OF_TASK.items():
        if heads.split_head_name(name, task_heads) is not None:
            return task
    from twins.models.registry import resolve_name  # unknown names: the registry's error

    resolve_name(name)
    return "classify"


def split_model_name(name: str) -> tuple[str, str] | None:
    """(head, canonical variant) of a dense model name; None for a classifier's name."""
    for task_heads in HEADS_OF_TASK.values():
        split = heads.split_head_name(name, task_heads)
        if split is not None:
            return split
    return None


def model_names(task: str | None = None) -> list[str]:
    """Every model's canonical name (of one task), classifiers first."""
    from twins.models.registry import VARIANTS

    names = list(VARIANTS) if task in (None, "classify") else []
    for name, task_heads in HEADS_OF_TASK.items():
        if task in (None, name):
            names += [f"{head}_{variant}" for head in task_heads for variant in VARIANTS]
    return names


def names_by_task() -> str:
    """The model names grouped by task, for messages: "classify: pcpvt_small, ...; segment:
    semantic_fpn_<variant>, upernet_<variant>; detect: ..."."""
    from twins.models.registry import VARIANTS

    groups = [f"classify: {', '.join(VARIANTS)}"]
    for task, task_heads in HEADS_OF_TASK.items():
        groups.append(f"{task}: {', '.join(f'{head}_<variant>' for head in task_heads)}")
    return "; ".join(groups)


def task_for(config: Any) -> Task:
    """The task of a training config, after checking that its `arch` is a model of it."""
    task = task_named(getattr(config, "task", "classify"))
    check_arch_task(config)
    task.check_config(config)
    return task


def check_arch_task(config: Any) -> None:
    """A config's `arch` must be a model of its `task`."""
    try:
        task = task_of(config.arch)
    except (TwinsError, KeyError, ValueError):
        return  # a bad arch is refused, with its own message, when the model is built
    if task != config.task:
        raise TwinsError(
            f"arch {config.arch} is a {task} model, but task is {config.task}: set task: {task}, "
            f"or give a {config.task} model as arch",
            argument="arch",
        )


def create_model(
    name: str, pretrained: Any = None, num_classes: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build any model by name: a Twins classifier (`twins.models.create_model`) or a dense
    model `<head>_<variant>` (`upernet_svt_small`, `maskrcnn_pcpvt_small`), built by its head's
    builder (`num_classes` default: the official data set's, ADE20K 150, COCO 80)."""
    return task_named(task_of(name)).create_model(
        name, pretrained=pretrained, num_classes=num_classes, **kwargs
    )


def model_from_weights(
    weights: Mapping[str, Any],
    arch: str | None = None,
    *,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The model the weights describe (their metadata's `arch`, else `arch`), loaded strictly,
    in eval mode: a classifier (`twins.models.from_weights`) or a dense model."""
    named = named_in(weights, arch)
    try:
        task = task_of(named)
    except TwinsError as error:
        raise TwinsError(f"{error} ({names_by_task()})", argument="arch") from error
    return task_named(task).model_from_weights(weights, arch, model_args=model_args)


def named_in(weights: Any, arch: str | None) -> str:
    """The model name `arch` gives, else the file's; a file that names none without `arch` is
    refused, listing the names by task."""
    named = arch or getattr(weights, "metadata", {}).get("arch")
    if not isinstance(named, str) or not named:
        raise TwinsError(
            f"the weights do not say which model they hold; pass arch ({names_by_task()})",
            argument="arch",
        )
    return named


def load_model(
    path: str | os.PathLike,
    ema: bool = False,
    *,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The model a file describes, with its weights, ready for `eval()`: the way back from any
    file this toolkit writes (training checkpoints, `.pth`, `.safetensors`, `.ckpt`, `.pt2`).

    `ema=True` takes a training checkpoint's EMA weights (a file without them is refused).
    A classifier's `pretrained_cfg` (timm's) carries the preprocessing its images need and the
    class names (`label_names`), so `timm.data.resolve_data_config(model=model)` prepares
    images as training evaluated them. `arch` and `model_args` describe the model where the
    file does not (official or timm weights). A dense model's file (arch `upernet_svt_small`,
    `maskrcnn_svt_small`, ...) gives back that model, rebuilt from its `model_args`, what the
    file knows of its data in its `pretrained_cfg` (`label_names`, `img_scale`, `mean`, `std`, a
    segmenter's `palette` and `reduce_zero_label`, a detector's `category_ids`); a detector
    trained here takes images already resized to its `min_size` / `max_size`
    (`resize_in_model: false`: `twins.tasks.detect.transforms.eval_transform` does it).
    `model.run_record` says what made the weights where a training run of this toolkit did
    (the command, versions, devices, data, seed: `run.json`), else None.
    """
    from twins.weights import load_weights

    weights = load_weights(path, ema=ema, arch=arch)
    model = model_from_weights(weights, arch, model_args=model_args)
    model.run_record = weights.metadata.get("run")
    return model


def task_of_weights(weights: Any, arch: str | None = None) -> Task:
    """The task of the model `arch` names, else of the model the file names, else the file's
    recorded task (a classifier where it says nothing)."""
    named = arch or weights.metadata.get("arch")
    if isinstance(named, str):
        try:
            return task_named(task_of(named))
        except TwinsError:  # a name this toolkit does not know: the file's task, if any
            pass
    return task_named(weights.metadata.get("task") or "classify")


# Each task's demo on the built-in digits: `run(output, overrides, say) -> the numbers`.
DEMOS: dict[str, str] = {
    "classify": "twins.tasks.classify.demo:run_demo",
    "segment": "twins.tasks.segment.demo:run_segment_demo",
    "detect": "twins.tasks.detect.demo:run_detect_demo",
}


def run_demo(
    task: str = "classify",
    output: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    say: Callable[[str], None] = console.say,
) -> dict[str, Any]:
    """The demo of `task` (`twins demo --task`), into `output` (default runs/demo,
    runs/demo-segment or runs/demo-detect); its lines through `say` (`twins.console`'s: the
    run's own lines, on stdout where the program routes none)."""
    if task not in DEMOS:
        raise TwinsError(f"no demo for task {task!r}: choose {', '.join(DEMOS)}", argument="task")
    module, function = DEMOS[task].split(":")
    default = "runs/demo" if task == "classify" else f"runs/demo-{task}"
    demo = getattr(importlib.import_module(module), function)
    with console.default_console():
        return demo(output or default, overrides, say)


def open_model(
    checkpoint: str | os.PathLike,
    *,
    arch: str | None = None,
    ema: bool | None = None,
    device: str = "auto",
) -> Any:
    """What predicts from `checkpoint`: an exported model (`.onnx`, `.pt2`, OpenVINO: run by its runtime,
    `twins.export.runtimes`), else the weights (`load_weights`) of the model rebuilt from
    them; refused in one line where neither says which model it holds."""
    from twins.export.runtimes import is_artifact, open_artifact
    from twins.weights import load_weights

    if is_artifact(checkpoint):
        if ema:
            raise TwinsError(
                f"{checkpoint}: an exported model holds no EMA weights; leave ema out",
                argument="ema",
            )
        return open_artifact(checkpoint, device=device, arch=arch)
    weights = load_weights(checkpoint, ema=ema, arch=arch)
    named_in(weights, arch)
    return weights


def predict(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str],
    *,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    ema: bool | None = None,
    device: str = "auto",
    **options: Any,
) -> Any:
    """The predictions of any model's weights file, or exported model (`open_model`), for
    every image the inputs name (files, folders searched recursively, globs, `@list.txt`);
    unreadable ones are listed, not fatal. The file's task reads its own `options`
    (`Task.predict_options`: a classifier's `topk`, `batch_size`, `image_size`, `crop_pct`; a
    segmenter's and a detector's `output`; a detector's `min_score` and `coco`); any other one
    given (not None) is refused in one line. Object-store and data-set inputs are streamed
    into a file: `twins.tasks.predictor.stream_predictions`."""
    from twins.data.image_sources import expand_lists

    paths, missing = find_local_images(expand_lists(inputs))
    if not paths:
        reasons = "; ".join(f"{item}: {reason}" for item, reason in missing)
        raise TwinsError(
            f"no images to predict ({reasons}); name image files, folders, globs or @lists",
            argument="inputs",
        )
    weights = open_model(checkpoint, arch=arch, ema=ema, device=device)
    task = task_of_weights(weights, arch)
    given = given_options(task, options)
    run = task.predict(
        weights, paths, checkpoint, arch=arch, model_args=model_args, device=device, **given
    )
    run.failures = missing + run.failures
    return run


def find_local_images(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """`find_images` of local inputs; an object-store URL or a data set is refused in one line:
    those are streamed (`--out`)."""
    from twins import storage
    from twins.data.image_sources import DATA_SETS
    from twins.data.images import find_images

    for item in inputs:
        if storage.is_remote(item) or any(accepts(str(item)) for accepts, _ in DATA_SETS):
            raise TwinsError(
                f"{item}: object-store and data-set inputs are predicted into a file: pass "
                "--out FILE (.jsonl, .csv or .parquet)",
                argument="out",
            )
    return find_images(inputs)


def given_options(task: Task, options: Mapping[str, Any]) -> dict[str, Any]:
    """The `options` given (not None), refused in one line where the task reads one not."""
    given = {name: value for name, value in options.items() if value is not None}
    unread = [name for name in given if name not in task.predict_options]
    if unread:
        reads = ", ".join(task.predict_options) or "no options"
        raise TwinsError(
            f"{', '.join(unread)}: not read by a {task.name} model's predict (it reads "
            f"{reads}); leave {'it' if len(unread) == 1 else 'them'} out",
            argument=unread[0],
        )
    return given


def export(
    checkpoint: str | os.PathLike,
    format: str,
    output: str | os.PathLike,
    *,
    arch: str | None = None,
    ema: bool | None = None,
    model_args: Mapping[str, Any] | None = None,
    image_size: int = 224,
    check: bool = True,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    max_drop: float = 0.5,
) -> Any:
    """Load any weights `load_weights` reads (a file, Hub-layout folder, `hf-hub:` id or URL)
    and export its model with its metadata, as the model's task exports it
    (`twins.export.engine`; "hf": the Hub layout, `twins.export.hub`). `arch` and
    `model_args` describe the model where the file does not; `image_size` is the side traced
    at (the graphs take any). `int8` (OpenVINO only) quantises with the images of
    `calibration` and refuses a model whose task metric drops by more than `max_drop` points
    on its held-out part (`twins.export.int8`)."""
    from twins.export.engine import check_export_request
    from twins.weights import load_weights

    check_export_request(checkpoint, format, output, image_size)
    check_int8_request(format, int8, calibration, max_drop)
    weights = load_weights(checkpoint, ema=ema, arch=arch)
    named_in(weights, arch)
    task = task_of_weights(weights, arch)
    model = task.model_from_weights(weights, arch, model_args=model_args)
    options: dict[str, Any] = {"image_size": image_size, "check": check}
    if format == "hf":  # the model card tells the run a training checkpoint records
        from twins.weights.record import training_record

        options["record"] = training_record(checkpoint)
    if int8:
        from twins.export.int8 import int8_quantizer

        samples = task.calibration_set(calibration, weights.metadata, model)
        options["quantize"] = int8_quantizer(samples, str(calibration), max_drop)
    return task.export(model, format, output, weights.metadata, **options)


def check_int8_request(
    format: str, int8: bool, calibration: str | os.PathLike | None, max_drop: float
) -> None:
    """int8 is an OpenVINO model's, calibrated on a folder, with a drop of 0 points or more."""
    if not int8:
        if calibration is not None:
            raise TwinsError(
                "calibration is read by the int8 export only: add int8, or leave calibration out",
                argument="calibration",
            )
        return
    if format != "openvino":
        raise TwinsError(
            f"int8 quantisation is offered for OpenVINO models, not {format}: export with "
            "format openvino, or leave int8 out",
            argument="int8",
        )
    if calibration is None:
        raise TwinsError(
            "int8 needs calibration images: pass calibration, a folder of the data the model "
            "will see (class folders for a classifier, the segment data layout for a segmenter)",
            argument="calibration",
        )
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise TwinsError(
            f"max_drop must be 0 points or more, not {max_drop!r}", argument="max_drop"
        )


def fit(config: Any, **kwargs: Any) -> dict[str, Any]:
    """Train `config` with its own task (`twins.train.fit`)."""
    from twins.train.fit_loop import fit as fit_with

    return fit_with(config, task_for(config), **kwargs)


def evaluate_checkpoint(config: Any, checkpoint: Any, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a weights file with the config's task (`twins.train.evaluate`)."""
    from twins.train.evaluate import evaluate_checkpoint as evaluate_with

    return evaluate_with(config, checkpoint, task_for(config), **kwargs)


__all__ = [
    "DEMOS",
    "HEADS_OF_TASK",
    "TASKS",
    "create_model",
    "evaluate_checkpoint",
    "export",
    "fit",
    "load_model",
    "model_from_weights",
    "model_names",
    "open_model",
    "predict",
    "run_demo",
    "split_model_name",
    "task_for",
    "task_named",
    "task_of",
    "task_of_weights",
]
