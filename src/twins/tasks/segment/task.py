"""Semantic segmentation (Semantic FPN, UperNet; mmsegmentation 0.12's recipes): image + label
PNG folders in the ADE20K layout, the official training pipeline (CPU, per sample), the
pixel cross-entropy of the decode and auxiliary heads, and mIoU / mAcc / aAcc over the whole
validation set (each image whole, its logits resized back to the original size)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from twins.config import ENGINE_KEYS
from twins.errors import TwinsError
from twins.models.flops import count_macs_of_call
from twins.tasks.base import DenseTask
from twins.tasks.segment import evaluate
from twins.tasks.segment.data import open_segmentation
from twins.tasks.segment.evaluate import eval_transform, evaluate_segmenters
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.loss import segmentation_loss
from twins.tasks.segment.transforms import (
    MEAN,
    STD,
    SegTrainTransform,
    collate_crops,
    collate_whole_images,
)
from twins.train.loss import Criterion
from twins.train.precision import Precision
from twins.train.task import ToDevice


class SegmentTask(DenseTask):
    heads = HEADS
    data_folders = ("images", "annotations")
    name = "segment"
    # mmseg's training pipeline and its loss with the auxiliary head's.
    reads = ENGINE_KEYS | {"img_scale", "ratio_range", "crop_size", "cat_max_ratio", "hflip"}
    reads |= {"reduce_zero_label", "ignore_index", "tta", "aux_loss_weight"}
    reads |= {"test_mode", "test_crop_size", "test_stride"}
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
        ignore = config.ignore_index
        train = open_segmentation(config.data_url, "training", train_transform, ignore)
        val = open_segmentation(config.data_url, "validation", eval_transform(config), ignore)
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

    def evaluation_model(self, weights: Any, config: Any) -> nn.Module:
        return evaluate.evaluation_model(weights, config)

    def evaluation_set(self, config: Any, metadata: dict[str, Any], model: nn.Module) -> Any:
        return evaluate.validation_set(config, metadata.get("class_names"), model.num_classes)

    def evaluate_file(
        self, models: dict, loader: Any, precision: Precision, config: Any, *, progress=False
    ) -> dict[str, dict[str, Any]]:
        return evaluate.evaluate_file(models, loader, precision, config, progress)

    def evaluation_result(self, metrics: dict, config: Any, val_set: Any) -> dict[str, Any]:
        return evaluate.evaluation_result(metrics, config, val_set)

    def describe_evaluation(self, result: dict[str, Any], data_url: str) -> str:
        return evaluate.describe(result, data_url)

    predict_options = ("output", "slide")

    def predict(self, weights: Any, paths: list, checkpoint: Any, **options: Any) -> Any:
        from twins.tasks.segment.predict import predict_segmentation

        return predict_segmentation(weights, paths, **options)

    def row_predictor(
        self, source: Any, checkpoint: Any, *, to_file: bool = False, **options: Any
    ) -> Any:
        from twins.tasks.segment.predict import row_predictor

        return row_predictor(source, checkpoint, required=to_file, **options)

    def export(self, model: nn.Module, format: str, output: Any, metadata: dict, **options) -> Any:
        from twins.tasks.segment.export import export_segmenter

        return export_segmenter(model, format, output, metadata, **options)

    def calibration_set(self, folder: Any, metadata: dict, model: nn.Module) -> Any:
        from twins.tasks.segment.calibration import segmenter_calibration
        from twins.tasks.segment.export import smallest_dense_side

        smallest = smallest_dense_side(model.arch, model.model_args)
        return segmenter_calibration(folder, metadata, model.num_classes, smallest)

    description = "segmentation"
    compares_with = ("smp",)

    def benchmark_batch(self, model: nn.Module, batch_size: int, side: int, device: Any) -> Any:
        channels = model.model_args.get("in_chans", 3)
        images = torch.randn(batch_size, channels, side, side, device=device)
        labels = torch.randint(0, model.num_classes, (batch_size, side, side), device=device)
        return images, labels, lambda run, x, y: F.cross_entropy(run(x)["out"], y)

    def count_macs(self, model: nn.Module, side: int) -> int:
        channels = model.model_args.get("in_chans", 3)
        return count_macs_of_call(model, torch.empty(1, channels, side, side, device="meta"))
