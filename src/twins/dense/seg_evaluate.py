"""`twins eval` of a segmenter: mIoU, mAcc, aAcc (%) of a weights file on the config's
`data_url` (its `images/validation` and `annotations/validation`), as mmsegmentation 0.12's test
computes them (`twins.tasks.segment.evaluate_segmenters`, the fit loop's evaluation).

Each image is tested whole at the config's `img_scale` and its logits resized back to the
original size; with `tta=true`, the paper's multi-scale + flip test (`predict_tta`: 6 ratios of
`img_scale`, each also mirrored, softmax averaged). Under torchrun each process takes a disjoint
shard and the pixel counts are summed, so every image counts once. With EMA weights (`--ema`,
or `with_ema` where the file has them), those are evaluated in the same pass.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from twins.data import build_loader
from twins.data.datasets import describe_left_out
from twins.dense.registry import split_dense_name
from twins.dense.seg_data import SegmentationFolder, open_segmentation
from twins.dense.seg_metrics import predict_tta
from twins.dense.seg_transforms import MEAN, STD, TTA_RATIOS, collate_whole_images
from twins.errors import TwinsError
from twins.models import smallest_image_size
from twins.models.from_weights import model_from_weights
from twins.tasks.segment import Logits, eval_transform, evaluate_segmenters, whole_image_labels
from twins.train import distributed
from twins.train.precision import build_precision
from twins.weights import StateDict


def evaluate_segmenter(
    config: Any,
    checkpoint: str | Path,
    weights: StateDict,
    ema_weights: StateDict | None,
    ctx: distributed.DistContext,
) -> dict[str, Any]:
    """{"mIoU", "mAcc", "aAcc" (%), "images", "IoU.<class>", "Acc.<class>" (%, None where the
    class is in neither prediction nor label), "tta", "arch", "checkpoint", "left_out"} and,
    with `ema_weights`, "ema": the same metrics of those."""
    arch = None if weights.metadata.get("arch") else config.arch
    model = model_from_weights(
        weights, arch=arch, model_args=None if not arch else config.model_args
    )
    model = model.to(ctx.device)
    val_set = _val_set(config, weights.metadata.get("class_names"), model.num_classes)
    sampler = distributed.ShardSampler(val_set, ctx.rank, ctx.world_size)
    loader = build_loader(
        val_set, config, train=False, sampler=sampler, lockstep=ctx.enabled,
        stack=collate_whole_images,
    )  # fmt: skip
    models: dict[str, nn.Module] = {"raw": model}
    if ema_weights is not None:
        models["ema"] = copy.deepcopy(model)
        models["ema"].load_state_dict(ema_weights)
    if config.tta:
        _check_tta_scale(config, model)
    label_map = _tta_labels(config) if config.tta else whole_image_labels
    results = evaluate_segmenters(
        models,
        loader,
        build_precision(config, ctx.device),
        progress=ctx.is_main and sys.stderr.isatty(),
        label_map=label_map,
        class_names=val_set.classes,
    )
    if ctx.enabled:
        distributed.check_health_together(val_set, ctx.device)
    result = _nan_as_none(results["raw"])
    result |= {"tta": bool(config.tta), "arch": model.arch, "checkpoint": str(checkpoint)}
    result["left_out"] = describe_left_out([val_set], Path(config.data_url).expanduser())
    if "ema" in results:
        result["ema"] = _nan_as_none(results["ema"])
    return result


def _val_set(config: Any, class_names: list[str] | None, num_classes: int) -> SegmentationFolder:
    # TTA resizes the decoded image itself, at every scale; the plain test gets it resized.
    transform = _decoded if config.tta else eval_transform(config)
    val_set = open_segmentation(config.data_url, "validation", transform)
    if len(val_set.classes) != num_classes:
        raise TwinsError(
            f"{config.data_url} has {len(val_set.classes)} classes but the model has "
            f"{num_classes}: evaluate on the data set the model was trained for",
            argument="data_url",
        )
    if class_names and list(class_names) != val_set.classes:
        raise TwinsError(
            f"the classes of {config.data_url} are not the classes the model was trained on "
            f"(first: {val_set.classes[:3]} vs {list(class_names)[:3]}): use the same class list",
            argument="data_url",
        )
    return val_set


def _decoded(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded uint8 image as it is and the label as class indices (int64)."""
    return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).long()


def _check_tta_scale(config: Any, model: nn.Module) -> None:
    """The smallest test scale must still give the backbone images it takes."""
    smallest_side = smallest_image_size(split_dense_name(model.arch)[1], model.model_args)
    short = int(min(config.img_scale) * min(TTA_RATIOS))
    if short < smallest_side:
        raise TwinsError(
            f"tta tests at {min(TTA_RATIOS)} x img_scale {list(config.img_scale)}, images of "
            f"{short} px on the short side, but {model.arch} takes at least {smallest_side}: "
            f"raise img_scale or leave tta off",
            argument="img_scale",
        )


def _tta_labels(config: Any):
    img_scale = tuple(config.img_scale)

    def tta_labels(logits: Logits, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return predict_tta(logits, image, img_scale=img_scale, mean=MEAN, std=STD).argmax(0)

    return tta_labels


def _nan_as_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a class with no pixel in prediction nor label is null."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in metrics.items()
    }
