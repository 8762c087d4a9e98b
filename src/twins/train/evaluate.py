"""`twins eval`: the validation metrics of a weights file on the config's `data_url/val`
(a segmenter's, named by the config's or the file's task: `twins.dense.seg_evaluate`).

The model is the one the file describes (its metadata, else `arch` with the file's shapes), in
any format `twins.load_weights` reads. Under torchrun each process takes a disjoint shard and
the sums are reduced, so every image counts once; broken images are judged on the counts of all
processes together after the pass, so that all stop or none does. With `with_ema` the EMA
weights of a training checkpoint are evaluated too, in the same pass (each batch through both
models), so each file is read and counted once.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from twins.config import TrainConfig
from twins.data import SafeImageFolder, build_eval_transform, build_loader
from twins.data.datasets import describe_left_out, is_packed_data, open_data
from twins.errors import TwinsError
from twins.models.from_weights import model_from_weights
from twins.models.twins import Twins
from twins.train import distributed
from twins.train.engine import evaluate_models
from twins.train.precision import build_precision
from twins.weights import StateDict, load_weights


def evaluate_checkpoint(
    config: TrainConfig, checkpoint: str | Path, *, ema: bool | None = None
) -> dict[str, Any]:
    """{"top1", "top5" (%), "loss", "images", "arch", "checkpoint", "left_out" (the files of the
    validation folder that are not images, counted and named: "" when none)} and, with EMA weights
    evaluated, "ema": {"top1", "top5", "loss", "images"}. `ema=True` evaluates the file's EMA
    weights too and refuses a file without them; None follows the config's `with_ema`, where
    the file has EMA weights. A detection config's file gets COCO's numbers instead
    (`twins.dense.det_evaluate`)."""
    if config.task == "detect":
        from twins.dense.det_evaluate import evaluate_detector

        return evaluate_detector(config, checkpoint, ema=ema)
    ctx = distributed.setup(config.device_target)
    try:
        weights = load_weights(checkpoint, arch=config.arch)  # tells PCPVT from SVT in a .ckpt
        ema_weights = ema_weights_for_evaluation(
            checkpoint, config.with_ema if ema is None else ema, ema
        )
        if "segment" in (config.task, weights.metadata.get("task")):
            from twins.dense.seg_evaluate import evaluate_segmenter

            return evaluate_segmenter(config, checkpoint, weights, ema_weights, ctx)
        model = _model_for(weights, config).to(ctx.device)
        val_set = _val_set(config, weights.metadata.get("class_names"), model.num_classes)
        sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
        loader = build_loader(val_set, config, train=False, sampler=sampler, lockstep=ctx.enabled)
        precision = build_precision(config, ctx.device)
        progress = ctx.is_main and sys.stderr.isatty()
        models = {"raw": model}
        if ema_weights is not None:
            models["ema"] = copy.deepcopy(model)
            models["ema"].load_state_dict(ema_weights)
        results = evaluate_models(models, loader, precision, progress=progress)
        if ctx.enabled:
            distributed.check_health_together(val_set, ctx.device)
        result: dict[str, Any] = results["raw"]
        result |= {"arch": model.arch, "checkpoint": str(checkpoint)}
        result["left_out"] = describe_left_out([val_set], Path(config.data_url).expanduser())
        if "ema" in results:
            result["ema"] = results["ema"]
        return result
    finally:
        distributed.cleanup()


def ema_weights_for_evaluation(
    checkpoint: str | Path, wanted: bool, required: bool | None
) -> StateDict | None:
    """The file's EMA weights when `wanted`; None where it has none, unless they are `required`
    (asked for by name), which refuses the file."""
    if not wanted:
        return None
    try:
        return load_weights(checkpoint, ema=True)
    except TwinsError:
        if required:
            raise
        return None  # trained without EMA: nothing more to evaluate


def _model_for(weights: StateDict, config: TrainConfig) -> Twins:
    """The model of the weights: as their metadata describes it, else the config's arch and
    model_args over the shapes of the tensors (head counts and windows leave none)."""
    metadata = weights.metadata
    arch = None if metadata.get("arch") else config.arch
    model_args = None if metadata.get("model_args") else config.model_args
    try:
        model = model_from_weights(weights, arch=arch, model_args=model_args)
    except TwinsError as error:
        used = {key: value for key, value in (("arch", arch), ("model_args", model_args)) if value}
        if not used:
            raise
        given = " and ".join(f"{key} {value}" for key, value in used.items())
        raise TwinsError(
            f"{error} ({given} from the config: set {' and '.join(used)} to the model the file "
            "holds)",
            argument=error.argument,
        ) from error
    if model.num_classes != config.num_classes:
        raise TwinsError(
            f"the weights classify {model.num_classes} classes but num_classes is "
            f"{config.num_classes}: set num_classes={model.num_classes} or use other weights"
        )
    return model


def _val_set(config: TrainConfig, class_names: list[str] | None, num_classes: int):
    if is_packed_data(config.data_url):
        val_set = open_data(config, {"val": build_eval_transform(config)})["val"]
        folder = val_set.root
    else:
        folder = Path(config.data_url).expanduser() / "val"
        val_set = _val_folder(config, folder)
    if len(val_set.classes) != num_classes:
        raise TwinsError(
            f"{folder} has {len(val_set.classes)} class folders but the model has {num_classes} "
            "classes: evaluate on the data set the model was trained for"
        )
    if class_names and list(class_names) != val_set.classes:
        raise TwinsError(
            f"the class folders of {folder} are not the classes the model was trained on "
            f"(first: {val_set.classes[:3]} vs {list(class_names)[:3]}): use the same class names"
        )
    return val_set


def _val_folder(config: TrainConfig, folder: Path) -> SafeImageFolder:
    if not folder.is_dir():
        raise TwinsError(
            f"validation folder {folder} not found: expected {folder}/<class>/<image>; "
            "set data_url",
            argument="data_url",
        )
    try:
        return SafeImageFolder(folder, transform=build_eval_transform(config))
    except FileNotFoundError as error:
        raise TwinsError(f"{str(error).splitlines()[0]}: add images to {folder}") from error
