"""Twins detectors: torchvision's `RetinaNet` and `MaskRCNN` over the Twins dense backbone and an
FPN, wired and set as the official configs (mmdetection 2.8; dense/FACTS.md §2e-2f, §5b).

`num_classes` counts the object classes, background excluded (`MaskRCNN` gets one more inside).
Images go through torchvision's `GeneralizedRCNNTransform`: ImageNet mean and std on 0..1
pixels, shorter side `min_size` (a tuple: one drawn per batch in training), longer side at
most `max_size`, batch padded to a multiple of `pad_divisor` (32); the official test setting is
800 / 1333. With `resize_in_model=False` the model does not resize: the images arrive at their
final size from a data pipeline (`twins.tasks.detect.transforms`, which resizes uint8 images as
mmdetection does, and draws the 3x recipe's multi-scale crops), as in every detector the fit
loop trains (`twins.tasks.detect.task`); `min_size` / `max_size` then only record the scale that
pipeline resizes to (`det_transforms.eval_transform(min_size, max_size)` prepares raw images).
`forward(images, targets)` is torchvision's: losses in training, a list of dicts with `boxes`,
`labels`, `scores` (and `masks`) in evaluation, in the input images' pixels. Labels run from 1
to num_classes in both detectors (0 is background).
`pretrained`: ImageNet weights (a file, or True for the published ones) for the backbone, or
a whole detector's weights, mmdetection's layout or this one's (`twins.tasks.detect.checkpoint`).
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from twins.errors import TwinsError
from twins.models.backbone import dense_backbone
from twins.models.backbone_weights import recorded_backbone_shape
from twins.models.pretrained import pretrained_file
from twins.models.registry import OVERRIDES, resolve_name
from twins.tasks.detect.checkpoint import load_detector_weights, read_detector_weights
from twins.tasks.detect.fpn_backbone import P6P7OnInput, TwinsFPN
from twins.tasks.detect.retinanet_labels import RetinaNetFromOne

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RATIOS = (0.5, 1.0, 2.0)
# Backbone arguments a detector takes (the classifier's, less those of its head).
BACKBONE_ARGUMENTS = (*(a for a in OVERRIDES if a != "global_pool"), "stage_norms")
# The input transform's arguments, recorded in `model_args`.
TRANSFORM_ARGUMENTS = ("min_size", "max_size", "resize_in_model", "pad_divisor")
# The FPN's width (256 in every official model; smaller for a demo on a CPU).
FPN_CHANNELS = 256
# RetinaNet's anchors: octave_base_scale (the smallest anchor's side in strides) and the groups
# of its GroupNorm head (off in the official models).
ANCHOR_SCALE = 4.0
HEAD_NORM_GROUPS = 32


def retinanet_anchor_sizes(scale: float = ANCHOR_SCALE) -> tuple[tuple[float, ...], ...]:
    """scale * stride * 2^(k/3), k = 0, 1, 2, at strides 8..128 (octave_base_scale 4, 3 scales
    per octave). torchvision rounds each anchor's corners to whole pixels; mmdetection does
    not."""
    return tuple(
        tuple(scale * stride * 2 ** (k / 3) for k in range(3)) for stride in (8, 16, 32, 64, 128)
    )


def retinanet(
    variant: str,
    num_classes: int = 80,
    pretrained: str | os.PathLike | bool | None = None,
    *,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    resize_in_model: bool = True,
    pad_divisor: int = 32,
    fpn_channels: int = 256,
    anchor_scale: float = ANCHOR_SCALE,
    head_norm: bool = False,
    fast_path: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> RetinaNetFromOne:
    """RetinaNet over Twins stages 2-4 (strides 8-32) with P6/P7 from the raw stage-4 map: 100
    detections per image, score 0.05, NMS 0.5, 1000 candidates per level before NMS.
    `anchor_scale`: the smallest anchor of a level in strides (the official 4; 2 meets objects
    of 16 px at stride 8). `head_norm`: a GroupNorm after each of the head's convs, as
    torchvision's retinanet_resnet50_fpn_v2 (off in the official models; from scratch it
    converges much sooner)."""
    return _build("retinanet", variant, num_classes, pretrained, locals(), overrides)


def maskrcnn(
    variant: str,
    num_classes: int = 80,
    pretrained: str | os.PathLike | bool | None = None,
    *,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    resize_in_model: bool = True,
    pad_divisor: int = 32,
    fpn_channels: int = 256,
    fast_path: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> MaskRCNN:
    """Mask R-CNN over Twins stages 1-4 (strides 4-32) plus a max-pooled P6: RPN anchors 8 x
    stride, 2000 / 1000 proposals per level before NMS (train / test), 1000 after; RoIAlign
    7 x 7 and 14 x 14 with adaptive sampling; 100 detections, score 0.05, NMS 0.5."""
    return _build("maskrcnn", variant, num_classes, pretrained, locals(), overrides)


def _build(
    head: str,
    variant: str,
    num_classes: int,
    pretrained: str | os.PathLike | bool | None,
    settings: dict[str, Any],
    overrides: dict[str, Any],
) -> nn.Module:
    variant = resolve_name(variant)
    arch = f"{head}_{variant}"
    unknown = sorted(set(overrides) - set(BACKBONE_ARGUMENTS))
    if unknown:
        valid = ", ".join(
            [
                *BACKBONE_ARGUMENTS,
                *TRANSFORM_ARGUMENTS,
                "fpn_channels",
                *(("anchor_scale", "head_norm") if head == "retinanet" else ()),
                "fast_path",
                "device",
                "dtype",
            ]
        )
        retinanet_only = [name for name in unknown if name in ("anchor_scale", "head_norm")]
        why = (
            f" ({', '.join(retinanet_only)}: RetinaNet's head only)"
            if head != "retinanet" and retinanet_only
            else ""
        )
        raise TwinsError(
            f"unknown argument(s) {', '.join(unknown)} for {arch}{why}: valid ones are {valid}",
            argument=unknown[0],
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TwinsError(
            f"num_classes={num_classes!r}: give the number of object classes (at least 1, "
            "background not counted; COCO: 80)",
            argument="num_classes",
        )
    device, dtype = settings["device"], settings["dtype"]
    weights = None
    if pretrained:
        pretrained = pretrained_file(pretrained, variant, device)
        layout, weights = read_detector_weights(pretrained, variant)
        if layout == "imagenet":
            overrides = {**recorded_backbone_shape(weights, variant), **overrides}
    min_size = settings["min_size"]
    min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else int(min_size)
    max_size = int(settings["max_size"])
    with torch.device(device) if device is not None else contextlib.nullcontext():
        try:
            body = dense_backbone(variant, fast_path=settings["fast_path"], **overrides)
        except TwinsError as error:
            raise TwinsError(f"cannot build {arch}: {error}", argument=error.argument) from error
        common = {
            "min_size": min_size,
            "max_size": max_size,
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
        }
        width = int(settings["fpn_channels"])
        if head == "retinanet":
            anchor_scale, head_norm = float(settings["anchor_scale"]), bool(settings["head_norm"])
            model = _retinanet(body, num_classes, common, width, anchor_scale, head_norm)
        else:
            model = _maskrcnn(body, num_classes, common, width)
        resize, pad_divisor = bool(settings["resize_in_model"]), int(settings["pad_divisor"])
        model.transform = DetectorInput(**common, size_divisible=pad_divisor, resize=resize)
    if dtype is not None:
        model.to(dtype)
    model.arch = arch
    model.task = "detect"
    model.num_classes = num_classes
    # What rebuilds this model: `twins.create_model(arch, **model_args)`.
    model.model_args = {
        **body.model_args,
        "num_classes": num_classes,
        "min_size": list(min_size) if isinstance(min_size, tuple) else min_size,
        "max_size": max_size,
        "resize_in_model": resize,
        "pad_divisor": pad_divisor,
    }
    # Recorded where they differ: the official models' args unchanged.
    if width != FPN_CHANNELS:
        model.model_args["fpn_channels"] = width
    if head == "retinanet" and anchor_scale != ANCHOR_SCALE:
        model.model_args["anchor_scale"] = anchor_scale
    if head == "retinanet" and head_norm:
        model.model_args["head_norm"] = True
    if weights is not None:
        load_detector_weights(model, layout, weights, head, pretrained)
    return model


class DetectorInput(GeneralizedRCNNTransform):
    """torchvision's input transform (normalise, resize, pad the batch), its resize skipped when
    `resize` is False (the images come resized from the data pipeline; the detections are then
    in the pixels of the images given)."""

    def __init__(self, *args: Any, resize: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resize_images = resize

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        if not self.resize_images:
            return image, target
        return super().resize(image, target)


def _retinanet(
    body: nn.Module,
    num_classes: int,
    common: dict[str, Any],
    width: int = FPN_CHANNELS,
    anchor_scale: float = ANCHOR_SCALE,
    head_norm: bool = False,
) -> RetinaNetFromOne:
    extra = P6P7OnInput(body.out_channels[3], width)
    backbone = TwinsFPN(body, stages=(1, 2, 3), extra=extra, out_channels=width)
    anchors = AnchorGenerator(retinanet_anchor_sizes(anchor_scale), (RATIOS,) * 5)
    norm = partial(nn.GroupNorm, HEAD_NORM_GROUPS) if head_norm else None
    head = RetinaNetHead(width, anchors.num_anchors_per_location()[0], num_classes, norm)
    return RetinaNetFromOne(
        backbone,
        num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=100,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.4,
        topk_candidates=1000,
        **common,
    )


def _maskrcnn(
    body: nn.Module, num_classes: int, common: dict[str, Any], width: int = FPN_CHANNELS
) -> MaskRCNN:
    backbone = TwinsFPN(body, stages=(0, 1, 2, 3), extra=LastLevelMaxPool(), out_channels=width)
    levels = ["0", "1", "2", "3"]
    return MaskRCNN(
        backbone,
        num_classes + 1,  # torchvision counts background as class 0
        rpn_anchor_generator=AnchorGenerator(
            tuple((8 * stride,) for stride in (4, 8, 16, 32, 64)), (RATIOS,) * 5
        ),
        rpn_pre_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_train=1000,
        rpn_post_nms_top_n_test=1000,
        rpn_nms_thresh=0.7,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=0),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=0),
        box_score_thresh=0.05,
        box_nms_thresh=0.5,
        box_detections_per_img=100,
        box_batch_size_per_image=512,
        box_positive_fraction=0.25,
        **common,
    )
