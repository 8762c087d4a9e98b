"""Semantic segmentation (Semantic FPN, UperNet; mmsegmentation 0.12's recipes): image + label
PNG folders in the ADE20K layout, the official training pipeline (CPU, per sample), the
pixel cross-entropy of the decode and auxiliary heads, and mIoU / mAcc / aAcc over the whole
validation set (each image whole, its logits resized back to the original size)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from twins.dense.seg_data import open_segmentation
from twins.dense.seg_loss import segmentation_loss
from twins.dense.seg_metrics import SegmentationMetrics, predict_labels
from twins.dense.seg_transforms import (
    MEAN,
    STD,
    SegTestTransform,
    SegTrainTransform,
    collate_crops,
    collate_whole_images,
)
from twins.errors import TwinsError
from twins.tasks.base import Criterion, Task, ToDevice
from twins.train.precision import Precision


class SegmentTask(Task):
    name = "segment"
    score = "mIoU"
    score_label = "mIoU"
    shown = ("mIoU", "mAcc", "aAcc")
    sync_batchnorm = True  # mmseg's heads: SyncBN

    def datasets(self, config: Any) -> tuple[Any, Any, list[str]]:
        train_transform = SegTrainTransform(
            img_scale=tuple(config.img_scale),
            ratio_range=tuple(config.ratio_range),
            crop_size=tuple(config.crop_size),
            cat_max_ratio=config.cat_max_ratio,
            hflip=config.hflip,
            ignore_index=config.ignore_index,
        )
        train = open_segmentation(config.data_url, "training", train_transform)
        val = open_segmentation(config.data_url, "validation", eval_transform(config))
        if train.class_list.reduce_zero_label != config.reduce_zero_label:
            said = "reduces label 0" if train.class_list.reduce_zero_label else "keeps label 0"
            raise TwinsError(
                f"{config.data_url} {said} (its classes.json, or the ADE20K layout without one) "
                f"but reduce_zero_label is {config.reduce_zero_label}; set "
                f"reduce_zero_label={train.class_list.reduce_zero_label} or fix classes.json",
                argument="reduce_zero_label",
            )
        if len(train.classes) != config.num_classes:
            raise TwinsError(
                f"{config.data_url} has {len(train.classes)} classes but num_classes is "
                f"{config.num_classes}; set num_classes={len(train.classes)}",
                argument="num_classes",
            )
        return train, val, list(train.classes)

    def metadata(self, config: Any, train_set: Any) -> dict[str, Any]:
        classes = train_set.class_list
        return {
            "preprocessing": {"img_scale": list(config.img_scale), "mean": list(MEAN)}
            | {"std": list(STD)},
            "dataset": {
                "palette": [list(rgb) for rgb in classes.palette],
                "reduce_zero_label": classes.reduce_zero_label,
                "ignore_index": config.ignore_index,
            },
        }

    def collate(self, train: bool) -> Any:
        # Training crops have one size (default_collate stacks them); whole images do not.
        return collate_crops if train else collate_whole_images

    def to_device(self, config: Any) -> ToDevice:
        def to_device(images: Any, labels: Any, device: torch.device) -> tuple[Any, Any]:
            return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

        return to_device

    def criterion(self, config: Any) -> Criterion:
        # mmseg 0.12 averages over every pixel, ignored ones too: the official recipes' loss.
        over_labelled = config.semantics != "official"
        aux_weight, ignore_index = config.aux_loss_weight, config.ignore_index

        def criterion(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
            loss, parts = segmentation_loss(
                model(images), labels, aux_weight, ignore_index, over_labelled
            )
            return {"loss": loss, **parts}

        return criterion

    def evaluate(
        self, models: dict[str, nn.Module], loader: Any, precision: Precision, *, progress=False
    ) -> dict[str, dict[str, Any]]:
        return evaluate_segmenters(models, loader, precision, progress=progress)


def eval_transform(config: Any) -> SegTestTransform:
    return SegTestTransform(img_scale=tuple(config.img_scale))


# A model's logits for a batch -> one image (as the loader gives it, on the device) -> the
# original size -> H x W class indices.
Logits = Callable[[torch.Tensor], torch.Tensor]
LabelMap = Callable[[Logits, torch.Tensor, tuple[int, int]], torch.Tensor]


def whole_image_labels(logits: Logits, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mmseg's whole-image test: the logits of the resized image, resized back, argmax."""
    return predict_labels(logits(image[None]), size)[0]


@torch.no_grad()
def evaluate_segmenters(
    models: dict[str, nn.Module],
    loader: Any,
    precision: Precision,
    *,
    progress: bool = False,
    desc: str = "eval",
    label_map: LabelMap = whole_image_labels,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """mIoU, mAcc, aAcc (%) and images of each model over every process's shard, in one pass
    (each image through every model), as mmseg 0.12's whole-image test computes them: each
    image alone, its logits resized to the label's (original) size, then argmax. `label_map`
    replaces that test (test-time augmentation); with `class_names`, per class `IoU.<name>` and
    `Acc.<name>` (%, NaN where a class is in neither prediction nor label) too."""
    for model in models.values():
        model.eval()
    device = precision.device
    metrics = {name: SegmentationMetrics(_classes(model)) for name, model in models.items()}
    images_seen = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
        for image, label in zip(images, labels, strict=True):
            image, label = image.to(device), label.to(device)
            images_seen += 1
            for name, model in models.items():
                logits = functools.partial(_logits, model, precision)
                prediction = label_map(logits, image, tuple(label.shape[-2:]))
                metrics[name].update(prediction, label)
    from twins.train.distributed import all_reduce_sum

    count = int(all_reduce_sum(images_seen).item())
    if count == 0:
        raise TwinsError("the validation set is empty: put images in images/validation/")
    results = {}
    for name, accumulated in metrics.items():
        accumulated.all_reduce()
        computed = accumulated.compute(class_names)
        keys = ["mIoU", "mAcc", "aAcc"]
        if class_names is not None:
            keys += [f"{kind}.{n}" for kind in ("IoU", "Acc") for n in class_names]
        results[name] = {key: computed[key] for key in keys}
        results[name]["images"] = count
    return results


def _logits(model: nn.Module, precision: Precision, images: torch.Tensor) -> torch.Tensor:
    with precision.autocast():
        return model(images)["out"].float()


def _classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", None) or model.model_args["num_classes"])
