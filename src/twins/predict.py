"""Classify image files with a trained model: top-k labels and probabilities per image.

Images are prepared as for evaluation (timm's eval transform: resize to image_size / crop_pct,
center crop, ImageNet normalisation). Class names come from the weights file, or, for a
1000-class model without names, from torchvision's ImageNet-1k weight metadata.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm.data
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from twins.errors import TwinsError
from twins.weights import load_weights, model_from_weights

# The official evaluation (DeiT's): resize 256, center crop 224, bicubic.
DEFAULT_IMAGE_SIZE = 224
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bicubic"


@dataclass
class Prediction:
    image: str
    top: list[tuple[int, str, float]]  # (class index, label, probability), most likely first


@dataclass
class PredictionRun:
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)

    def to_json(self) -> dict:
        return {
            "predictions": [
                {
                    "image": p.image,
                    "top": [
                        {"index": index, "label": label, "probability": round(prob, 6)}
                        for index, label, prob in p.top
                    ],
                }
                for p in self.predictions
            ],
            "failures": [{"image": image, "error": reason} for image, reason in self.failures],
        }


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


def find_images(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and glob patterns -> image paths, plus
    the inputs that named nothing."""
    images: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
            images += found
            if not found:
                missing.append((item, "folder holds no images"))
        elif path.is_file():
            images.append(path)  # named explicitly: tried whatever its extension
        elif glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            found = [p for p in matches if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS]
            images += found
            if not found:
                missing.append((item, "pattern matches no images"))
        else:
            missing.append((item, "no such file or folder"))
    return list(dict.fromkeys(images)), missing


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A model from a weights file, ready to classify images."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        arch: str | None = None,
        ema: bool | None = None,
        device: str = "auto",
        image_size: int | None = None,
        crop_pct: float | None = None,
    ) -> None:
        weights = load_weights(checkpoint, ema=ema, arch=arch)
        self.device = resolve_device(device)
        self.model = model_from_weights(weights, arch).to(self.device)
        if not self.model.num_classes:
            raise TwinsError(f"{checkpoint}: the model has no classifier head; nothing to predict")
        self.class_names = class_names_for(
            weights.metadata.get("class_names"), self.model.num_classes
        )
        metadata = weights.metadata
        size = image_size or metadata.get("image_size") or DEFAULT_IMAGE_SIZE
        self.transform = timm.data.create_transform(
            input_size=(3, size, size),
            is_training=False,
            interpolation=metadata.get("interpolation") or DEFAULT_INTERPOLATION,
            crop_pct=crop_pct or metadata.get("crop_pct") or DEFAULT_CROP_PCT,
        )

    def _load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return self.transform(image.convert("RGB"))

    def _batches(
        self, paths: Sequence[Path], batch_size: int, run: PredictionRun
    ) -> Iterator[tuple[list[Path], torch.Tensor]]:
        names, tensors = [], []
        for path in paths:
            try:
                tensors.append(self._load(path))
                names.append(path)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                run.failures.append((str(path), f"unreadable image: {error}"))
            if len(tensors) == batch_size:
                yield names, torch.stack(tensors)
                names, tensors = [], []
        if tensors:
            yield names, torch.stack(tensors)

    @torch.inference_mode()
    def predict(
        self, paths: Sequence[Path], *, topk: int = 5, batch_size: int = 32
    ) -> PredictionRun:
        run = PredictionRun()
        k = max(1, min(topk, self.model.num_classes))
        for names, batch in self._batches(paths, batch_size, run):
            probabilities = self.model(batch.to(self.device)).float().softmax(dim=-1)
            values, indices = probabilities.topk(k, dim=-1)
            for name, row_values, row_indices in zip(
                names, values.tolist(), indices.tolist(), strict=True
            ):
                top = [
                    (i, self.class_names[i], p)
                    for i, p in zip(row_indices, row_values, strict=True)
                ]
                run.predictions.append(Prediction(str(name), top))
        return run


def predict(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str],
    *,
    topk: int = 5,
    batch_size: int = 32,
    arch: str | None = None,
    ema: bool | None = None,
    device: str = "auto",
    image_size: int | None = None,
    crop_pct: float | None = None,
) -> PredictionRun:
    """Top-k predictions for every image the inputs name; unreadable ones are listed, not fatal."""
    if topk < 1 or batch_size < 1:
        raise TwinsError(f"--topk ({topk}) and --batch-size ({batch_size}) must be at least 1")
    paths, missing = find_images(inputs)
    if not paths:
        reasons = "; ".join(f"{item}: {reason}" for item, reason in missing)
        raise TwinsError(f"no images to predict ({reasons}); name image files, folders or globs")
    predictor = Predictor(
        checkpoint, arch=arch, ema=ema, device=device, image_size=image_size, crop_pct=crop_pct
    )
    run = predictor.predict(paths, topk=topk, batch_size=batch_size)
    run.failures = missing + run.failures
    return run


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
