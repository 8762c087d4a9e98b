"""`twins predict` of a segmenter: a label map and an overlay per image.

Each image is decoded as the data sets decode it, tested whole as `twins eval` tests it (keep-ratio
resize to the checkpoint's `img_scale`, its `mean` and `std`; the logits resized back to the
original size, argmax) and written to the output folder as

- `<image stem>.png`: the label map as an indexed (palette) PNG, with the label values of the data
  set's annotation files: where the data set reduces label 0 (ADE20K), class i is written i + 1
  and 0 (unlabelled) is not used; else class i is i. The palette is the data set's colours
  (checkpoint metadata "dataset"), so the file reads back into the same data set and shows in
  colour;
- `<image stem>_overlay.png`: the image blended half and half with its classes' colours.

Files are written whole or not at all (`twins.storage.write_bytes`), to a folder or an
object-store URL.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from twins import storage
from twins.data.images import decode_rgb_tensor
from twins.device import select_device
from twins.errors import TwinsError
from twins.tasks.head import named_model_from_weights
from twins.tasks.segment.ade20k import ADE20K_PALETTE
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.metrics import predict_labels
from twins.tasks.segment.transforms import IMG_SCALE, MEAN, STD, SegTestTransform
from twins.weights import StateDict

OVERLAY_ALPHA = 0.5  # the colours' share of an overlay pixel


@dataclass
class SegmentationPrediction:
    image: str
    label_map: str  # the written label PNG
    overlay: str  # the written overlay PNG
    classes: list[str]  # the names of the classes present, in class order


@dataclass
class SegmentationRun:
    predictions: list[SegmentationPrediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "predictions": [
                {
                    "image": p.image,
                    "label_map": p.label_map,
                    "overlay": p.overlay,
                    "classes": p.classes,
                }
                for p in self.predictions
            ],
            "failures": [{"image": image, "error": reason} for image, reason in self.failures],
            "preprocessing": self.preprocessing,
        }

    def format(self) -> str:
        lines = []
        for p in self.predictions:
            lines.append(f"{p.image} -> {p.label_map}, {p.overlay}")
            lines.append(f"  classes: {', '.join(p.classes) or 'none'}")
        lines += [f"skipped {image}: {reason}" for image, reason in self.failures]
        return "\n".join(lines)


class SegmentationPredictor:
    """A segmenter from its weights (with metadata), ready to label images."""

    def __init__(
        self,
        weights: StateDict,
        *,
        arch: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        device: str = "auto",
    ) -> None:
        self.device = select_device(device)
        model = named_model_from_weights(HEADS, weights, arch, model_args)
        self.model = model.to(self.device).eval()
        metadata = weights.metadata
        num_classes = self.model.num_classes
        names = metadata.get("class_names")
        self.class_names = (
            list(names)
            if names and len(names) == num_classes
            else [str(i) for i in range(num_classes)]
        )
        described = metadata.get("preprocessing")
        described = described if isinstance(described, Mapping) else {}
        self.preprocessing = {
            "img_scale": list(described.get("img_scale") or IMG_SCALE),
            "mean": list(described.get("mean") or MEAN),
            "std": list(described.get("std") or STD),
        }
        self.transform = SegTestTransform(
            tuple(self.preprocessing["img_scale"]),
            tuple(self.preprocessing["mean"]),
            tuple(self.preprocessing["std"]),
        )
        dataset = metadata.get("dataset")
        dataset = dataset if isinstance(dataset, Mapping) else {}
        self.reduce_zero_label = bool(dataset.get("reduce_zero_label", False))
        palette = dataset.get("palette") or [ADE20K_PALETTE[i % 150] for i in range(num_classes)]
        self.palette = np.array(palette, dtype=np.uint8).reshape(-1, 3)
        if len(self.palette) != num_classes:
            raise TwinsError(
                f"the weights' palette has {len(self.palette)} colours for {num_classes} "
                "classes: write the file again from its training checkpoint"
            )
        if num_classes + self.reduce_zero_label > 256:
            raise TwinsError(
                f"{num_classes} classes do not fit the 8-bit values of a label PNG",
                argument="checkpoint",
            )

    @torch.inference_mode()
    def label_map(self, image: torch.Tensor) -> torch.Tensor:
        """Class indices (H x W, int64, on the CPU) of a uint8 RGB image (3 x H x W)."""
        inputs = self.transform.image(image)[None].to(self.device)
        logits = self.model(inputs)["out"].float()
        return predict_labels(logits, image.shape[-2:])[0].cpu()

    def label_png(self, classes: torch.Tensor) -> bytes:
        """The label map as an indexed PNG, in the data set's label values and colours."""
        values = classes.numpy().astype(np.uint8) + (1 if self.reduce_zero_label else 0)
        colours = np.zeros((256, 3), dtype=np.uint8)
        start = 1 if self.reduce_zero_label else 0
        colours[start : start + len(self.palette)] = self.palette
        png = Image.fromarray(values)  # putpalette makes it indexed
        png.putpalette(colours.flatten().tolist())
        return _png_bytes(png)

    def overlay_png(self, image: torch.Tensor, classes: torch.Tensor) -> bytes:
        """The image blended with its classes' colours, as an RGB PNG."""
        pixels = image.permute(1, 2, 0).numpy().astype(np.float32)
        colours = self.palette[classes.numpy()].astype(np.float32)
        blended = (1 - OVERLAY_ALPHA) * pixels + OVERLAY_ALPHA * colours
        return _png_bytes(Image.fromarray(blended.round().astype(np.uint8)))

    def predict(self, paths: Sequence[Path], output: str) -> SegmentationRun:
        run = SegmentationRun(preprocessing=dict(self.preprocessing))
        for path in paths:
            try:
                image, _ = decode_rgb_tensor(storage.read_bytes(path))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                run.failures.append((str(path), f"unreadable image: {error}"))
                continue
            classes = self.label_map(image)
            label_file = storage.join(output, f"{path.stem}.png")
            overlay_file = storage.join(output, f"{path.stem}_overlay.png")
            storage.write_bytes(label_file, self.label_png(classes))
            storage.write_bytes(overlay_file, self.overlay_png(image, classes))
            present = [self.class_names[i] for i in torch.unique(classes).tolist()]
            run.predictions.append(
                SegmentationPrediction(str(path), label_file, overlay_file, present)
            )
        return run


def predict_segmentation(
    weights: StateDict,
    paths: Sequence[Path],
    output: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> SegmentationRun:
    """Label maps and overlays of `paths` written to `output` (see the module's docstring)."""
    if output is None:
        raise TwinsError(
            "a segmenter's predictions are label maps: name a folder for them (--output DIR)",
            argument="output",
        )
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise TwinsError(
                f"{stems[path.stem]} and {path} would both be written as {path.stem}.png: "
                "predict them into different output folders",
                argument="inputs",
            )
        stems[path.stem] = path
    output = str(output)
    if not storage.is_remote(output):
        Path(output).expanduser().mkdir(parents=True, exist_ok=True)
        output = str(Path(output).expanduser())
    predictor = SegmentationPredictor(weights, arch=arch, model_args=model_args, device=device)
    return predictor.predict(paths, output)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
