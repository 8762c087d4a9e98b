"""`twins eval` of a detector: COCO's twelve box numbers (and mask numbers for Mask R-CNN) of a
weights file on the val split of the config's COCO-format `data_url`.

The images go through the recipe's evaluation resize (keep-ratio into `img_scale`, on uint8, in
the data pipeline; the model's own resize is switched off whatever the file says, so no image
is resized twice) and the detections are scored by pycocotools' COCOeval in the original
pixels. Under torchrun each process takes a disjoint shard and the detections are gathered by
image, so every image counts once. With `with_ema` the EMA weights of a training checkpoint are
evaluated too, in the same pass.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from torch import nn

from twins.config import TrainConfig
from twins.data import build_loader
from twins.dense.coco_data import open_coco_split
from twins.errors import TwinsError
from twins.models.from_weights import model_from_weights
from twins.tasks.detect import (
    DetectTask,
    detection_eval_transform,
    evaluate_detectors,
    images_and_targets,
    predicts_masks,
)
from twins.train import distributed
from twins.train.evaluate import ema_weights_for_evaluation
from twins.train.precision import build_precision
from twins.weights import StateDict, load_weights


def evaluate_detector(
    config: TrainConfig, checkpoint: str | Path, *, ema: bool | None = None
) -> dict[str, Any]:
    """{"bbox_AP", "bbox_AP50", ..., "bbox_ARl" (and "segm_..." for masks), in %, "images",
    "arch", "checkpoint"} and, with EMA weights evaluated, "ema": the same numbers of those.
    `ema` as `twins.train.evaluate.evaluate_checkpoint` takes it."""
    ctx = distributed.setup(config.device_target)
    try:
        weights = load_weights(checkpoint)
        ema_weights = ema_weights_for_evaluation(
            checkpoint, config.with_ema if ema is None else ema, ema
        )
        model = detector_for(weights, config).to(ctx.device)
        val_set = open_coco_split(
            config.data_url,
            "val",
            detection_eval_transform(config),
            with_masks=predicts_masks(model),
        )
        _check_categories(val_set.categories.category_ids, weights.metadata, model, config)
        sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
        loader = build_loader(
            val_set, config, train=False, sampler=sampler, lockstep=ctx.enabled,
            stack=images_and_targets,
        )  # fmt: skip
        models = {"raw": model}
        if ema_weights is not None:
            models["ema"] = copy.deepcopy(model)
            models["ema"].load_state_dict(ema_weights)
        progress = ctx.is_main and sys.stderr.isatty()
        precision = build_precision(config, ctx.device)
        results = evaluate_detectors(models, loader, precision, progress=progress)
        if ctx.enabled:
            distributed.check_health_together(val_set, ctx.device)
        result: dict[str, Any] = results["raw"]
        result |= {"arch": model.arch, "checkpoint": str(checkpoint)}
        if "ema" in results:
            result["ema"] = results["ema"]
        return result
    finally:
        distributed.cleanup()


def detector_for(weights: StateDict, config: TrainConfig) -> nn.Module:
    """The detector of the weights, as their metadata describes it, else the config's arch,
    model_args and num_classes; its own resize off (the data pipeline resizes)."""
    metadata = weights.metadata
    arch = metadata.get("arch") or config.arch
    model_args = None
    if not metadata.get("model_args"):
        model_args = {
            **config.model_args,
            **DetectTask().model_arguments(config),
            "num_classes": config.num_classes,
        }
    model = model_from_weights(weights, arch, model_args=model_args)
    if getattr(model, "task", None) != "detect":
        raise TwinsError(
            f"{arch} is not a detector, but the config's task is detect: evaluate it with the "
            "config of its own task",
            argument="arch",
        )
    if model.num_classes != config.num_classes:
        raise TwinsError(
            f"the weights detect {model.num_classes} classes but num_classes is "
            f"{config.num_classes}: set num_classes={model.num_classes} or use other weights",
            argument="num_classes",
        )
    model.transform.resize_images = False
    return model


def _check_categories(
    category_ids: list[int], metadata: dict[str, Any], model: nn.Module, config: TrainConfig
) -> None:
    """The val annotations must list the categories the model was trained on (its labels map
    to them in order)."""
    if len(category_ids) != model.num_classes:
        raise TwinsError(
            f"the val annotations of {config.data_url} list {len(category_ids)} categories but "
            f"the model detects {model.num_classes}: evaluate on the data set it was trained for",
            argument="data_url",
        )
    trained = (metadata.get("dataset") or {}).get("category_ids")
    if trained and list(trained) != list(category_ids):
        raise TwinsError(
            f"the val annotations of {config.data_url} list other category ids than the model "
            f"was trained on (first: {category_ids[:3]} vs {list(trained)[:3]}): use the same "
            "categories",
            argument="data_url",
        )


def describe(result: dict[str, Any], data_url: str) -> str:
    """The line `twins eval` prints for a detector's result."""
    text = (
        f"{result['arch']} on {data_url}/val: box AP {result['bbox_AP']:.2f}  "
        f"AP50 {result['bbox_AP50']:.2f}  AP75 {result['bbox_AP75']:.2f}"
    )
    if "segm_AP" in result:
        text += f"  mask AP {result['segm_AP']:.2f}"
    text += f"  ({result['images']} images)"
    if "ema" in result:
        text += f"\nEMA weights: box AP {result['ema']['bbox_AP']:.2f}"
    return text
