"""`twins eval`: the validation metrics of a weights file, one driver for every task.

The model is the one the file describes (its metadata, else the config's `arch` and
`model_args` with the file's shapes), in any format `twins.load_weights` reads; the task
(`twins.train.task.Task`) gives the model, the validation set and the metric. Under torchrun
each process takes a disjoint shard and the sums are reduced, so every image counts once;
broken images are judged on the counts of all processes together after the pass, so that all
stop or none does. With `with_ema` the EMA weights of a training checkpoint are evaluated too,
in the same pass (each batch through both models), so each file is read and counted once.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from twins.config import TrainConfig
from twins.console import progress_shown
from twins.data import build_loader
from twins.errors import TwinsError
from twins.train import distributed
from twins.train.precision import build_precision
from twins.train.task import Task
from twins.weights import StateDict, load_weights


def evaluate_checkpoint(
    config: TrainConfig, checkpoint: str | Path, task: Task, *, ema: bool | None = None
) -> dict[str, Any]:
    """The task's metrics of the file's weights (`Task.evaluation_result`: a classifier's
    "top1", "top5" (%), "loss"; a segmenter's "mIoU", ...; a detector's COCO numbers) with
    "images", "arch", "checkpoint" and, with EMA weights evaluated, "ema": the same metrics of
    those. `ema=True` evaluates the file's EMA weights too and refuses a file without them;
    None follows the config's `with_ema`, where the file has EMA weights."""
    ctx = distributed.setup(config.device_target)
    try:
        weights = load_weights(checkpoint, arch=config.arch)  # tells PCPVT from SVT in a .ckpt
        ema_weights = ema_weights_for_evaluation(
            checkpoint, config.with_ema if ema is None else ema, ema
        )
        model = task.evaluation_model(weights, config).to(ctx.device)
        val_set = task.evaluation_set(config, weights.metadata, model)
        sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
        loader = build_loader(
            val_set, config, train=False, sampler=sampler, lockstep=ctx.enabled,
            stack=task.collate(train=False),
        )  # fmt: skip
        results = task.evaluate_file(
            with_ema(model, ema_weights),
            loader,
            build_precision(config, ctx.device),
            config,
            progress=ctx.is_main and progress_shown(),
        )
        if ctx.enabled:
            distributed.check_health_together(val_set, ctx.device)
        result = task.evaluation_result(results["raw"], config, val_set)
        result |= {"arch": model.arch, "checkpoint": str(checkpoint)}
        result["skipped"] = skipped_images(val_set)
        if "ema" in results:
            result["ema"] = task.evaluation_result(results["ema"], config, None)
        return result
    finally:
        distributed.cleanup()


def skipped_images(val_set: Any) -> dict[str, Any]:
    """{"count", "files"}: the images the pass left out (unreadable, or refused by the task's
    data checks), of every process."""
    files = list(val_set.broken_files)
    if torch.distributed.is_initialized():
        shards: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, files)
        files = sorted(name for shard in shards for name in shard)
    return {"count": len(files), "files": files}


def with_ema(model: nn.Module, ema_weights: StateDict | None) -> dict[str, nn.Module]:
    """{"raw": model} and, with EMA weights, "ema": a copy of it holding them."""
    models = {"raw": model}
    if ema_weights is not None:
        models["ema"] = copy.deepcopy(model)
        models["ema"].load_state_dict(ema_weights)
    return models


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


def model_for_config(weights: StateDict, config: TrainConfig, task: Task) -> nn.Module:
    """The model of the weights: as their metadata describes it, else the config's arch and
    model_args over the shapes of the tensors; its class count must be the config's."""
    metadata = weights.metadata
    arch = None if metadata.get("arch") else config.arch
    model_args = None if metadata.get("model_args") else config.model_args
    try:
        model = task.model_from_weights(weights, arch, model_args=model_args)
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
            f"the weights {task.verb} {model.num_classes} classes but num_classes is "
            f"{config.num_classes}: set num_classes={model.num_classes} or use other weights",
            argument="num_classes",
        )
    return model
