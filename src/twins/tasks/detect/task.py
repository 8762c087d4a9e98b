"""Object detection and instance segmentation (RetinaNet, Mask R-CNN; mmdetection 2.8's
recipes): COCO-format data (`twins.tasks.detect.data`), the official training pipeline of the
recipe's `scale_policy` (`single`: 1x, `detr`: the 3x multi-scale crops;
`twins.tasks.detect.transforms`), torchvision's detection losses, and COCO box (and mask) AP with
pycocotools over the whole validation set, each image once.

Images are resized once, in the data pipeline (uint8, per image, as mmdetection resizes), so the
detectors are built with their own resize off (`resize_in_model=False`, recorded in their
`model_args`); they still normalise and pad the batch to `pad_divisor`. The detections come out
in the resized images' pixels and are mapped back to the original ones for COCOeval.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from twins.config import ENGINE_KEYS
from twins.errors import TwinsError
from twins.models.flops import count_macs_of_call
from twins.tasks.base import DenseTask
from twins.tasks.detect import evaluate
from twins.tasks.detect.data import CocoDataset, first_difference, open_coco_split
from twins.tasks.detect.detectors import IMAGENET_MEAN, IMAGENET_STD
from twins.tasks.detect.evaluate import evaluate_detectors
from twins.tasks.detect.heads import HEADS
from twins.tasks.detect.transforms import (
    CROP_POLICY_SHORT_SIDES,
    CROP_SIZE_RANGE,
    MULTI_SCALE_SHORT_SIDES,
    SHORT_SIDE,
    detection_eval_transform,
    detector_arguments,
    images_and_targets,
    to_model_input,
    train_transform_1x,
    train_transform_3x,
)
from twins.tasks.head import split_head_name
from twins.train.loss import Criterion
from twins.train.precision import Precision
from twins.train.task import ToDevice


class DetectTask(DenseTask):
    heads = HEADS
    data_folders = ("train", "val", "annotations")
    name = "detect"
    # mmdet's resize (one scale or DETR's) and padding; torchvision's losses.
    reads = ENGINE_KEYS | {"img_scale", "scale_policy", "pad_divisor", "hflip"}
    score = "bbox_AP"
    score_label = "box AP"
    shown = ("bbox_AP", "bbox_AP50", "segm_AP")

    def datasets(self, config: Any) -> tuple[CocoDataset, CocoDataset, list[str]]:
        masks = with_masks(config)
        train = open_coco_split(config.data_url, "train", train_transform(config), masks)
        val = open_coco_split(config.data_url, "val", detection_eval_transform(config), masks)
        if len(train.categories) != config.num_classes:
            raise TwinsError(
                f"{config.data_url} has {len(train.categories)} categories but num_classes is "
                f"{config.num_classes}; set num_classes={len(train.categories)}",
                argument="num_classes",
            )
        if val.categories.category_ids != train.categories.category_ids:
            difference = first_difference(
                val.categories.category_ids, train.categories.category_ids
            )
            raise TwinsError(
                f"the val and train annotation files of {config.data_url} list other category "
                f"ids (sorted, val vs train, {difference}): give both the same categories",
                argument="data_url",
            )
        if len(train) == 0:
            raise TwinsError(
                f"no image of {train.annotation_file} has a usable annotation "
                f"({train.summary() or 'it lists no images'}): annotate the training images",
                argument="data_url",
            )
        return train, val, list(train.categories.names)

    def model_arguments(self, config: Any) -> dict[str, Any]:
        return detector_arguments(config)

    def metadata(self, config: Any, train_set: Any) -> dict[str, Any]:
        long_side, short_side = config.img_scale
        categories = train_set.categories
        return {
            "preprocessing": {
                "img_scale": [long_side, short_side],
                "min_size": short_side,
                "max_size": long_side,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
                "pad_divisor": config.pad_divisor,
            },
            # Label i + 1 of the model is category_ids[i] of the training annotations.
            "dataset": {
                "category_ids": list(categories.category_ids),
                "category_names": list(categories.names),
            },
        }

    def collate(self, train: bool) -> Any:
        return images_and_targets

    def to_device(self, config: Any) -> ToDevice:
        return to_model_input

    def criterion(self, config: Any) -> Criterion:
        def criterion(model: nn.Module, images: list, targets: list) -> dict[str, torch.Tensor]:
            parts = model(images, targets)  # torchvision's loss dict in training mode
            return {"loss": sum(parts.values()), **parts}

        return criterion

    def evaluate(
        self, models: dict[str, nn.Module], loader: Any, precision: Precision, *, progress=False
    ) -> dict[str, dict[str, Any]]:
        return evaluate_detectors(models, loader, precision, progress=progress)

    predict_options = ("output", "min_score", "coco")

    def predict(self, weights: Any, paths: list, checkpoint: Any, **options: Any) -> Any:
        from twins.tasks.detect.predict import predict_detections

        return predict_detections(weights, paths, **options)

    def row_predictor(
        self, source: Any, checkpoint: Any, *, to_file: bool = False, **options: Any
    ) -> Any:
        from twins.tasks.detect.predict import row_predictor

        return row_predictor(source, checkpoint, **options)

    def export(self, model: nn.Module, format: str, output: Any, metadata: dict, **options) -> Any:
        from twins.tasks.detect.export import export_detector

        return export_detector(model, format, output, metadata, **options)

    def evaluation_model(self, weights: Any, config: Any) -> nn.Module:
        return evaluate.detector_for(weights, config)

    def evaluation_set(self, config: Any, metadata: dict[str, Any], model: nn.Module) -> Any:
        return evaluate.validation_set(config, metadata, model)

    def describe_evaluation(self, result: dict[str, Any], data_url: str) -> str:
        return evaluate.describe(result, data_url)

    description = "detection"

    def model_arguments_for_benchmark(self) -> dict[str, Any]:
        return {"resize_in_model": False}

    def benchmark_batch(self, model: nn.Module, batch_size: int, side: int, device: Any) -> Any:
        """Images in 0..1 and a box per image (with its mask) to train on; the detector's own
        losses summed."""
        channels = model.model_args.get("in_chans", 3)
        images = list(torch.rand(batch_size, channels, side, side, device=device))
        targets = synthetic_targets(batch_size, side, model.num_classes, device)
        return images, targets, lambda run, x, y: sum(run(x, y).values())

    def count_macs(self, model: nn.Module, side: int) -> int:
        channels = model.model_args.get("in_chans", 3)
        return count_macs_of_call(model, [torch.rand(channels, side, side)], on="cpu")


def with_masks(config: Any) -> bool:
    """Whether the config's detector predicts masks (Mask R-CNN): its data then carry them."""
    split = split_head_name(config.arch, HEADS)
    return split is not None and split[0] == "maskrcnn"


def train_transform(config: Any) -> Any:
    """The recipe's training pipeline at `img_scale` ([long, short]): `single` resizes into it
    and flips; `detr` draws DETR's multi-scale sizes and crops, scaled by short / 800 (so the
    official sizes at 1333 x 800)."""
    long_side, short_side = config.img_scale
    if config.scale_policy == "single":
        return train_transform_1x(short_side, long_side, flip=config.hflip)
    factor = short_side / SHORT_SIDE

    def scaled(sides: tuple[int, ...]) -> list[int]:
        return sorted({max(1, round(side * factor)) for side in sides})

    crop_sizes = scaled(CROP_SIZE_RANGE)
    return train_transform_3x(
        scaled(MULTI_SCALE_SHORT_SIDES),
        long_side,
        scaled(CROP_POLICY_SHORT_SIDES),
        (crop_sizes[0], crop_sizes[-1]),
        flip=config.hflip,
    )


def synthetic_targets(
    count: int, side: int, num_classes: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """A detector's training targets: one box per image, the middle half of it, of a class
    drawn at random (labels count from 1), with its mask (Mask R-CNN reads one)."""
    low, high = side / 4, side * 3 / 4
    mask = torch.zeros(1, side, side, dtype=torch.uint8, device=device)
    mask[:, side // 4 : side * 3 // 4, side // 4 : side * 3 // 4] = 1
    return [
        {
            "boxes": torch.tensor([[low, low, high, high]], device=device),
            "labels": torch.randint(1, num_classes + 1, (1,), device=device),
            "masks": mask,
        }
        for _ in range(count)
    ]
