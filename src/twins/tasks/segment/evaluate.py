"""`twins eval` of a segmenter: mIoU, mAcc, aAcc (%) of a weights file on the config's
`data_url` (its `images/validation` and `annotations/validation`), as mmsegmentation 0.12's test
computes them (`evaluate_segmenters`, the fit loop's evaluation too).

Each image is tested whole at the config's `img_scale` and its logits resized back to the
original size; with `tta=true`, the paper's multi-scale + flip test (`predict_tta`: 6 ratios of
`img_scale`, each also mirrored, softmax averaged). With `test_mode=slide`, each test image (of
every scale, with tta) is tested by mmseg's sliding windows of `test_crop_size` every
`test_stride` pixels instead of whole (`twins.tasks.segment.slide`). Under torchrun each process takes a disjoint
shard and the pixel counts are summed, so every image counts once. With EMA weights (`--ema`,
or `with_ema` where the file has them), those are evaluated in the same pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from twins.data.folder import describe_left_out
from twins.errors import TwinsError
from twins.models import smallest_image_size
from twins.tasks.head import head_model_from_weights, split_head_name
from twins.tasks.segment.data import SegmentationFolder, open_segmentation
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.metrics import SegmentationMetrics, predict_labels, predict_tta
from twins.tasks.segment.slide import check_window, slide_labels, slide_logits
from twins.tasks.segment.transforms import MEAN, STD, TTA_RATIOS, SegTestTransform, pad_to_side
from twins.train.precision import Precision
from twins.weights import StateDict


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
    smallest = {name: smallest_side(model) for name, model in models.items()}
    images_seen = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
        for image, label in zip(images, labels, strict=True):
            image, label = image.to(device), label.to(device)
            images_seen += 1
            for name, model in models.items():
                logits = functools.partial(_logits, model, precision, smallest[name])
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


def _logits(
    model: nn.Module, precision: Precision, smallest: int, images: torch.Tensor
) -> torch.Tensor:
    """The model's logits of `images`, padded for the network to its smallest side."""
    height, width = images.shape[-2:]
    with precision.autocast():
        logits = model(pad_to_side(images, smallest))["out"].float()
    return logits[..., :height, :width]


def smallest_side(model: nn.Module) -> int:
    """The smallest input side the segmenter's backbone takes (1 for a model that does not
    say what it is)."""
    arch = getattr(model, "arch", None)
    if arch is None:
        return 1
    return smallest_image_size(split_head_name(arch, HEADS)[1], model.model_args)


def _classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", None) or model.model_args["num_classes"])


def validation_set(
    config: Any, class_names: list[str] | None, num_classes: int
) -> SegmentationFolder:
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
    smallest = smallest_side(model)
    short = int(min(config.img_scale) * min(TTA_RATIOS))
    if short < smallest:
        raise TwinsError(
            f"tta tests at {min(TTA_RATIOS)} x img_scale {list(config.img_scale)}, images of "
            f"{short} px on the short side, but {model.arch} takes at least {smallest}: "
            f"raise img_scale or leave tta off",
            argument="img_scale",
        )


def _tta_labels(config: Any, window: tuple[list, list] | None) -> LabelMap:
    img_scale = tuple(config.img_scale)

    def tta_labels(logits: Logits, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if window is not None:  # each scale and flip slid over, as mmseg's aug-test does
            logits = functools.partial(_slid, logits, window)
        return predict_tta(logits, image, img_scale=img_scale, mean=MEAN, std=STD).argmax(0)

    return tta_labels


def _slid(logits: Logits, window: tuple[list, list], batch: torch.Tensor) -> torch.Tensor:
    """The sliding-window logits of a batch of one image (1 x K x H x W)."""
    return slide_logits(logits, batch[0], *window)[None]


def _slide_labels(window: tuple[list, list]) -> LabelMap:
    def labels(logits: Logits, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return slide_labels(logits, image, size, *window)

    return labels


def test_window(config: Any) -> tuple[list, list] | None:
    """The config's sliding window (crop, stride), or None for the whole-image test."""
    if config.test_mode != "slide":
        return None
    window = (list(config.test_crop_size), list(config.test_stride))
    check_window(*window)
    return window


def label_map_of(config: Any) -> LabelMap:
    """The test the config asks for: whole or sliding windows, with or without tta."""
    window = test_window(config)
    if config.tta:
        return _tta_labels(config, window)
    return whole_image_labels if window is None else _slide_labels(window)


def _nan_as_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a class with no pixel in prediction nor label is null."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in metrics.items()
    }


def evaluation_model(weights: StateDict, config: Any) -> nn.Module:
    """The segmenter of the weights, as their metadata describes it, else the config's arch and
    model_args."""
    arch = None if weights.metadata.get("arch") else config.arch
    model_args = None if not arch else config.model_args
    return head_model_from_weights(HEADS, weights, arch or weights.metadata["arch"], model_args)


def evaluate_file(
    models: dict[str, nn.Module], loader: Any, precision: Precision, config: Any, progress: bool
) -> dict[str, dict[str, Any]]:
    """The whole-image or sliding-window test of each model, or with `tta` the paper's
    multi-scale + flip test, with per-class numbers."""
    if config.tta:
        _check_tta_scale(config, models["raw"])
    return evaluate_segmenters(
        models,
        loader,
        precision,
        progress=progress,
        label_map=label_map_of(config),
        class_names=loader.dataset.classes,
    )


def evaluation_result(metrics: dict[str, Any], config: Any, val_set: Any) -> dict[str, Any]:
    result = _nan_as_none(metrics)
    if val_set is not None:
        result["tta"] = bool(config.tta)
        window = test_window(config)
        if window is not None:
            result["slide"] = {"crop": window[0], "stride": window[1]}
        result["left_out"] = describe_left_out([val_set], Path(config.data_url).expanduser())
    return result


def describe(result: dict[str, Any], data_url: str) -> str:
    """The lines `twins eval` prints of a segmenter's result."""
    window = result.get("slide")
    slid = window and f"{_pair(window['crop'])} every {_pair(window['stride'])}"
    if result["tta"]:
        test = "multi-scale + flip test" + (f", sliding windows {slid}" if slid else "")
    else:
        test = f"sliding-window test, {slid}" if slid else "whole-image test"
    lines = []
    for name, metrics in (("", result), ("EMA weights: ", result.get("ema"))):
        if metrics:
            lines.append(
                f"{name or result['arch'] + ' on ' + data_url + ': '}mIoU {metrics['mIoU']:.2f}%  "
                f"mAcc {metrics['mAcc']:.2f}%  aAcc {metrics['aAcc']:.2f}%  "
                f"({metrics['images']} images, {test})"
            )
    return "\n".join(lines)


def _pair(size: list) -> str:
    return f"{size[0]}x{size[1]}"
