"""Classify image files with a trained model: top-k labels and probabilities per image.

Images are decoded as training and evaluation decode them (`twins.data.images`: EXIF
orientation, 16-bit and alpha handled) and prepared as the weights file says its model expects
(`preprocessing` metadata, `twins.tasks.classify.transforms.eval_transform`); a file that says nothing gets
the official evaluation (resize 256, centre crop 224, bicubic, ImageNet mean and std). Class
names come from the weights file, or, for a 1000-class model without names, from torchvision's
ImageNet-1k weight metadata.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from twins.data.image_input import as_pil
from twins.data.images import open_rgb
from twins.device import select_device
from twins.errors import TwinsError
from twins.export.runtimes.artifact import Artifact
from twins.models import smallest_image_size
from twins.models.from_weights import model_from_weights
from twins.notes import note
from twins.tasks.classify.transforms import eval_transform
from twins.weights import StateDict, load_weights

# The official evaluation (DeiT's), for weights that do not say how they were evaluated.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "image_size": 224,
    "crop_pct": 0.875,
    "crop_mode": "center",
    "interpolation": "bicubic",
    "mean": list(IMAGENET_DEFAULT_MEAN),
    "std": list(IMAGENET_DEFAULT_STD),
}
CROP_MODES = ("center", "squash", "border")  # timm's eval transform


@dataclass
class Prediction:
    image: str
    top: list[tuple[int, str, float]]  # (class index, label, probability), most likely first


@dataclass
class PredictionRun:
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # how the images were prepared

    def to_json(self) -> dict:
        return {
            "predictions": [top_row(p.image, p.top) for p in self.predictions],
            "failures": [{"image": image, "error": reason} for image, reason in self.failures],
            "preprocessing": self.preprocessing,
        }

    def format(self) -> str:
        return format_run(self)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k labels in class-index order (shipped with torchvision, no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def class_names_for(names: Sequence[str] | None, num_classes: int) -> list[str]:
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == 1000:
        return imagenet_class_names()
    return [f"class {index}" for index in range(num_classes)]


def check_image_size(image_size: int | None) -> None:
    """None (the weights' own size) or a positive whole number of pixels."""
    whole = isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool)
    if image_size is not None and not (whole and image_size >= 1):
        raise TwinsError(
            f"image_size must be a whole number of pixels, at least 1, not {image_size!r}",
            argument="image_size",
        )


def check_crop_pct(crop_pct: float | None) -> None:
    """None (the weights' own) or the fraction of the resized image the crop keeps, in (0, 1]."""
    if crop_pct is not None and not (isinstance(crop_pct, numbers.Real) and 0 < crop_pct <= 1):
        raise TwinsError(
            f"crop_pct is the fraction of the resized image kept by the crop: a number in "
            f"(0, 1], not {crop_pct!r} (0.875 is the usual one)",
            argument="crop_pct",
        )


def prediction_preprocessing(
    described: Mapping[str, Any] | None,
    *,
    image_size: int | None = None,
    crop_pct: float | None = None,
) -> dict[str, Any]:
    """How to prepare images: the weights' `preprocessing` (`described`) over the defaults, then
    the `image_size` / `crop_pct` given."""
    check_image_size(image_size)
    check_crop_pct(crop_pct)
    preprocessing = dict(DEFAULT_PREPROCESSING)
    if isinstance(described, Mapping):
        preprocessing.update({k: v for k, v in described.items() if k in DEFAULT_PREPROCESSING})
    if image_size is not None:
        preprocessing["image_size"] = image_size
    if crop_pct is not None:
        preprocessing["crop_pct"] = float(crop_pct)
    try:  # what was given is checked above: a problem here comes from the file
        if described is not None and not isinstance(described, Mapping):
            raise TwinsError(f"{described!r} is no mapping")
        check_image_size(preprocessing["image_size"])
        check_crop_pct(preprocessing["crop_pct"])
        if preprocessing["crop_mode"] not in CROP_MODES:
            raise TwinsError(f"crop_mode {preprocessing['crop_mode']!r} is not one of {CROP_MODES}")
    except TwinsError as error:
        raise TwinsError(
            f"the weights' preprocessing metadata is invalid ({error}): pass image_size and "
            "crop_pct, or write the file again with valid metadata",
            argument="image_size",
        ) from error
    return preprocessing


class Predictor:
    """A model from a weights file, or an exported one (`twins.export.runtimes`), ready to
    classify images."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        weights: StateDict | Artifact | None = None,
        arch: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        ema: bool | None = None,
        device: str = "auto",
        image_size: int | None = None,
        crop_pct: float | None = None,
    ) -> None:
        self.device = select_device(device)
        check_image_size(image_size)
        check_crop_pct(crop_pct)
        if weights is None:  # else the file's, already read
            weights = load_weights(checkpoint, ema=ema, arch=arch)
        metadata = weights.metadata
        if isinstance(weights, StateDict):
            model = model_from_weights(weights, arch, model_args=model_args).to(self.device)
            self.model: Any = model
            self.num_classes = model.num_classes
            arch, model_args = model.arch, model.model_args
        else:  # an exported model runs as it was exported
            self.model = weights
            self.num_classes = int(metadata.get("num_classes") or 0)
            arch, model_args = metadata["arch"], metadata.get("model_args") or {}
        if not self.num_classes:
            raise TwinsError(f"{checkpoint}: the model has no classifier head; nothing to predict")
        self.class_names = class_names_for(metadata.get("class_names"), self.num_classes)
        described = metadata.get("preprocessing")
        self.preprocessing = prediction_preprocessing(
            described, image_size=image_size, crop_pct=crop_pct
        )
        if described is None and (image_size is None or crop_pct is None):
            note(
                f"{checkpoint} says nothing of its preprocessing: using "
                f"{self.preprocessing['image_size']} px, crop {self.preprocessing['crop_pct']} "
                "(bicubic, ImageNet mean and std); pass image_size and crop_pct (--image-size, "
                "--crop-pct) if the model was trained otherwise"
            )
        smallest = smallest_image_size(arch, model_args)
        if self.preprocessing["image_size"] < smallest:
            raise TwinsError(
                f"image_size {self.preprocessing['image_size']} is too small for "
                f"{arch}: it takes images of at least {smallest} pixels a side",
                argument="image_size",
            )
        self.transform = eval_transform(self.preprocessing)
        self.topk, self.batch_size = 5, 32

    def load(self, image: Any) -> torch.Tensor:
        """One image (a file, or any form `twins.data.image_input` takes) as the model's input
        (C, H, W), decoded as the data loader does."""
        if isinstance(image, (str, os.PathLike)):
            return self.transform(open_rgb(image)[0])
        return self.transform(as_pil(image))

    def _batches(
        self, items: Iterable[tuple[str, Any]], batch_size: int
    ) -> Iterator[tuple[list[str], torch.Tensor | None, str | None]]:
        """(names, their batch, None), or ([name], None, why) for an image that cannot be read,
        in the order of `items`."""
        names, tensors = [], []
        for name, image in items:
            try:
                tensor = self.load(image)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                if tensors:  # the images before it keep their place
                    yield names, torch.stack(tensors), None
                    names, tensors = [], []
                yield [name], None, f"unreadable image: {error}"
                continue
            tensors.append(tensor)
            names.append(name)
            if len(tensors) == batch_size:
                yield names, torch.stack(tensors), None
                names, tensors = [], []
        if tensors:
            yield names, torch.stack(tensors), None

    @torch.inference_mode()
    def _top(
        self, items: Iterable[tuple[str, Any]], topk: int, batch_size: int
    ) -> Iterator[tuple[str, list[tuple[int, str, float]] | None, str | None]]:
        """(name, top-k, None) per image, or (name, None, why) where it cannot be read."""
        k = max(1, min(topk, self.num_classes))
        for names, batch, error in self._batches(items, batch_size):
            if batch is None:
                yield names[0], None, error
                continue
            logits = self.model(batch.to(self.device))
            probabilities = logits.float().softmax(dim=-1)
            values, indices = probabilities.topk(k, dim=-1)
            for name, row_values, row_indices in zip(
                names, values.tolist(), indices.tolist(), strict=True
            ):
                top = [
                    (i, self.class_names[i], p)
                    for i, p in zip(row_indices, row_values, strict=True)
                ]
                yield name, top, None

    columns = ("top",)

    def plan(self, names: Sequence[str]) -> None:
        """Nothing to place: a classifier writes no files."""

    def rows(self, items: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        """One row per image, in order: `--json`'s prediction entry (image, top: index, label,
        probability), or image and error."""
        for name, top, error in self._top(items, self.topk, self.batch_size):
            yield {"image": name, "error": error} if top is None else top_row(name, top)

    def predict(
        self, paths: Sequence[Path], *, topk: int = 5, batch_size: int = 32
    ) -> PredictionRun:
        run = PredictionRun(preprocessing=dict(self.preprocessing))
        items = ((str(path), path) for path in paths)
        for name, top, error in self._top(items, topk, batch_size):
            if top is None:
                run.failures.append((name, error))
            else:
                run.predictions.append(Prediction(name, top))
        return run


def top_row(image: str, top: Sequence[tuple[int, str, float]]) -> dict[str, Any]:
    return {
        "image": image,
        "top": [
            {"index": index, "label": label, "probability": round(prob, 6)}
            for index, label, prob in top
        ],
    }


def predict_weights(
    weights: StateDict | Artifact,
    paths: Sequence[Path],
    *,
    checkpoint: str | os.PathLike = "the weights",
    topk: int | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> PredictionRun:
    """The top-k (default 5) predictions of the classifier in `weights` for `paths`, in
    batches of `batch_size` (default 32); `options`: `Predictor`'s."""
    predictor = row_predictor(weights, checkpoint, topk=topk, batch_size=batch_size, **options)
    return predictor.predict(paths, topk=predictor.topk, batch_size=predictor.batch_size)


def row_predictor(
    weights: StateDict | Artifact,
    checkpoint: str | os.PathLike = "the weights",
    *,
    topk: int | None = None,
    batch_size: int | None = None,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    device: str = "auto",
    image_size: int | None = None,
    crop_pct: float | None = None,
) -> Predictor:
    """The classifier in `weights` (or an exported one), giving the top-k (default 5) of each
    image in batches of `batch_size` (default 32)."""
    topk = 5 if topk is None else topk
    batch_size = 32 if batch_size is None else batch_size
    for name, value in (("topk", topk), ("batch_size", batch_size)):
        if value < 1:
            raise TwinsError(f"{name} must be at least 1, not {value}", argument=name)
    predictor = Predictor(
        checkpoint,
        weights=weights,
        arch=arch,
        model_args=model_args,
        device=device,
        image_size=image_size,
        crop_pct=crop_pct,
    )
    predictor.topk, predictor.batch_size = topk, batch_size
    return predictor


def format_run(run: PredictionRun) -> str:
    """Readable top-k lists, one block per image, then the failures."""
    lines = []
    for prediction in run.predictions:
        lines.append(prediction.image)
        width = max(len(label) for _, label, _ in prediction.top)
        for rank, (index, label, probability) in enumerate(prediction.top, start=1):
            named = "" if label == f"class {index}" else f"  (class {index})"
            lines.append(f"  {rank}. {label:<{width}}  {100 * probability:6.2f}%{named}")
    for image, reason in run.failures:
        lines.append(f"skipped {image}: {reason}")
    return "\n".join(lines)
