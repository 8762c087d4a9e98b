"""Image classification: ImageFolder or packed data, the seed's transforms (uint8 tensors
finished on the device), Mixup/CutMix, label-smoothed cross entropy, top-1/top-5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from twins.config import ENGINE_KEYS
from twins.data.folder import describe_left_out
from twins.data.loader import stack_by_value
from twins.errors import TwinsError
from twins.export.formats import export_as
from twins.models import count_macs, create_model, smallest_image_size
from twins.models.from_weights import model_from_weights
from twins.models.timm_config import timm_hub_config
from twins.preprocessing import eval_preprocessing
from twins.tasks.classify.data import build_datasets
from twins.tasks.classify.device_batch import build_device_batch
from twins.tasks.classify.evaluate import describe, evaluate_models, validation_set
from twins.tasks.classify.mixup import build_mixup
from twins.train.evaluate import model_for_config
from twins.train.loss import Criterion, logits_criterion
from twins.train.precision import Precision
from twins.train.task import Task, ToDevice


class ClassifyTask(Task):
    name = "classify"
    score = "top1"
    score_label = "top-1"
    shown = ("top1", "top5", "loss")
    data_folders = ("train", "val")
    verb = "classify"
    # The image pipeline (timm's augmentations, Mixup/CutMix, the eval resize and crop), packed
    # data sets and the smoothed cross-entropy.
    reads = ENGINE_KEYS | {"shuffle_block", "cache_dir", "cache_size", "hflip", "crop_scale"}
    reads |= {"mix_up", "cutmix", "mixup_prob", "switch_prob", "mixup_mode", "label_smoothing"}
    reads |= {"auto_augment", "interpolation", "re_prob", "re_mode", "re_count", "image_size"}
    reads |= {"crop_pct", "val_split"}

    def check_config(self, config: Any) -> None:
        super().check_config(config)
        try:
            smallest = smallest_image_size(config.arch, config.model_args)
        except (TwinsError, KeyError, TypeError, ValueError):
            return  # a bad arch or model_args is refused, with its own message, when built
        if config.image_size < smallest:
            raise TwinsError(
                f"image_size {config.image_size} is too small for {config.arch}: it takes "
                f"images of at least {smallest} pixels a side",
                argument="image_size",
            )

    def create_model(self, name: str, **kwargs: Any) -> nn.Module:
        return create_model(name, **kwargs)

    def model_from_weights(
        self, weights: Any, arch: str | None = None, *, model_args: Any = None
    ) -> nn.Module:
        return model_from_weights(weights, arch, model_args=model_args)

    def datasets(self, config: Any) -> tuple[Any, Any, list[str]]:
        return build_datasets(config)

    def metadata(self, config: Any, train_set: Any) -> dict[str, Any]:
        return {"preprocessing": eval_preprocessing(config)}

    def collate(self, train: bool) -> Any:
        # Training batches (uint8) leave the loader's workers by value, the cheaper hand-over.
        return stack_by_value if train else default_collate

    def to_device(self, config: Any) -> ToDevice:
        device_batch = build_device_batch(config)

        def to_device(inputs: Any, targets: torch.Tensor, device: torch.device) -> tuple:
            return device_batch(inputs, device), targets.to(device, non_blocking=True)

        return to_device

    def batch_mix(self, config: Any) -> Any:
        return build_mixup(config)

    def criterion(self, config: Any) -> Criterion:
        return logits_criterion(config)

    def evaluate(
        self, models: dict[str, nn.Module], loader: Any, precision: Precision, *, progress=False
    ) -> dict[str, dict[str, Any]]:
        return evaluate_models(models, loader, precision, progress=progress)

    def evaluation_model(self, weights: Any, config: Any) -> nn.Module:
        return model_for_config(weights, config, self)

    def evaluation_set(self, config: Any, metadata: dict[str, Any], model: nn.Module) -> Any:
        return validation_set(config, metadata.get("class_names"), model.num_classes)

    def evaluation_result(
        self, metrics: dict[str, Any], config: Any, val_set: Any
    ) -> dict[str, Any]:
        if val_set is None:
            return dict(metrics)
        root = Path(config.data_url).expanduser()
        return metrics | {"left_out": describe_left_out([val_set], root)}

    def describe_evaluation(self, result: dict[str, Any], data_url: str) -> str:
        return describe(result, data_url)

    predict_options = ("topk", "batch_size", "image_size", "crop_pct")

    def predict(self, weights: Any, paths: list, checkpoint: Any, **options: Any) -> Any:
        from twins.tasks.classify.predict import predict_weights

        return predict_weights(weights, paths, checkpoint=checkpoint, **options)

    def row_predictor(
        self, source: Any, checkpoint: Any, *, to_file: bool = False, **options: Any
    ) -> Any:
        from twins.tasks.classify.predict import row_predictor

        return row_predictor(source, checkpoint, **options)

    def export(self, model: nn.Module, format: str, output: Any, metadata: dict, **options) -> Any:
        # The Hub layout of a classifier is timm's, which timm and transformers load.
        return export_as(model, format, output, metadata, hub_config=timm_hub_config, **options)

    def calibration_set(self, folder: Any, metadata: dict, model: nn.Module) -> Any:
        from twins.tasks.classify.calibration import classifier_calibration

        return classifier_calibration(folder, metadata, model.num_classes)

    description = "classification"
    compares_with = ("timm", "openvino")

    def benchmark_batch(self, model: nn.Module, batch_size: int, side: int, device: Any) -> Any:
        images = torch.randn(batch_size, model.in_chans, side, side, device=device)
        labels = torch.randint(0, max(model.num_classes, 1), (batch_size,), device=device)
        return images, labels, lambda run, x, y: F.cross_entropy(run(x), y)

    def count_macs(self, model: nn.Module, side: int) -> int:
        return count_macs(model, side)
