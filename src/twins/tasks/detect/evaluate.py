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

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from twins.config import TrainConfig
from twins.errors import TwinsError
from twins.tasks.detect.data import first_difference, open_coco_split
from twins.tasks.detect.heads import HEADS
from twins.tasks.detect.metrics import coco_metrics, detections_to_coco, gather_by_image
from twins.tasks.detect.transforms import (
    detection_eval_transform,
    detector_arguments,
    to_model_input,
)
from twins.tasks.head import head_model_from_weights, split_head_name
from twins.train.precision import Precision
from twins.weights import StateDict


@torch.no_grad()
def evaluate_detectors(
    models: dict[str, nn.Module],
    loader: Any,
    precision: Precision,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, dict[str, Any]]:
    """COCO's twelve box numbers (and mask numbers for Mask R-CNN) in %, and `images`, of each
    model over every process's shard, in one pass (each batch through every model): the
    detections of all processes gathered by image, so each image counts once."""
    for model in models.values():
        model.eval()
    dataset = loader.dataset
    device = precision.device
    by_image: dict[str, dict[Any, list[dict[str, Any]]]] = {name: {} for name in models}
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False):
        inputs, _ = to_model_input(images, [], device)
        for name, model in models.items():
            with precision.autocast():
                detections = model(inputs)
            for image, target, found in zip(images, targets, detections, strict=True):
                image_id = target["image_id"]
                by_image[name][image_id] = detections_to_coco(
                    found,
                    image_id,
                    dataset.coco.imgs[image_id]["file_name"],
                    tuple(image.shape[-2:]),
                    tuple(target["orig_size"]),
                    dataset.categories,
                )
    results = {}
    for name, model in models.items():
        gathered = gather_by_image(by_image[name])
        if not gathered:
            raise TwinsError("the validation set is empty: put images in the val split")
        iou_types = ("bbox", "segm") if predicts_masks(model) else ("bbox",)
        results[name] = coco_metrics(dataset.coco, gathered, iou_types)
    return results


def predicts_masks(model: nn.Module) -> bool:
    """Whether the detector has a mask head (Mask R-CNN)."""
    heads = getattr(model, "roi_heads", None)
    return heads is not None and heads.has_mask()


def detector_for(weights: StateDict, config: TrainConfig) -> nn.Module:
    """The detector of the weights, as their metadata describes it, else the config's arch,
    model_args and num_classes; its own resize off (the data pipeline resizes)."""
    metadata = weights.metadata
    arch = metadata.get("arch") or config.arch
    model_args = None
    if not metadata.get("model_args"):
        model_args = {
            **config.model_args,
            **detector_arguments(config),
            "num_classes": config.num_classes,
        }
    if split_head_name(arch, HEADS) is None:
        raise TwinsError(
            f"{arch} is not a detector, but the config's task is detect: evaluate it with the "
            "config of its own task",
            argument="arch",
        )
    model = head_model_from_weights(HEADS, weights, arch, model_args)
    if model.num_classes != config.num_classes:
        raise TwinsError(
            f"the weights detect {model.num_classes} classes but num_classes is "
            f"{config.num_classes}: set num_classes={model.num_classes} or use other weights",
            argument="num_classes",
        )
    model.transform.resize_images = False
    return model


def check_categories(
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
            f"was trained on (sorted, val vs trained, {first_difference(category_ids, trained)})"
            ": use the same categories",
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
    skipped = result.get("skipped") or {}
    if skipped.get("count"):
        text += f"  ({result['images']} images; {skipped['count']} skipped, the warnings name them)"
    else:
        text += f"  ({result['images']} images)"
    if "ema" in result:
        text += f"\nEMA weights: box AP {result['ema']['bbox_AP']:.2f}"
    return text


def validation_set(config: Any, metadata: dict[str, Any], model: nn.Module) -> Any:
    """The val split of the config's COCO data, with masks where the model predicts them; its
    categories must be the model's."""
    val_set = open_coco_split(
        config.data_url, "val", detection_eval_transform(config), with_masks=predicts_masks(model)
    )
    check_categories(val_set.categories.category_ids, metadata, model, config)
    return val_set
