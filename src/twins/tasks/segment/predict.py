"""`twins predict` of a segmenter: a label map and an overlay per image.

Each image is decoded as the data sets decode it, tested whole as `twins eval` tests it (keep-ratio
resize to the checkpoint's `img_scale`, its `mean` and `std`; the logits resized back to the
original size, argmax; with `slide=(crop, stride)`, by sliding windows of `crop` pixels every
`stride`, as `twins.tasks.segment.slide` tests them) and written to the output folder, under the image's path relative to
the deepest folder holding all the images (`output_names`: `a/x.jpg` and `b/x.jpg` give
`OUT/a/x.png` and `OUT/b/x.png`; the images of one folder keep their paths inside it), as

- `<name>.png`: the label map as an indexed (palette) PNG, with the label values of the data
  set's annotation files: where the data set reduces label 0 (ADE20K), class i is written i + 1
  and 0 (unlabelled) is not used; else class i is i. The palette is the data set's colours
  (checkpoint metadata "dataset"), so the file reads back into the same data set and shows in
  colour;
- `<name>_overlay.png`: the image blended half and half with its classes' colours.

Nothing is written over an input or over another output: a run that would (the output folder
being the input folder where `x.png` is an input, `x_overlay.png` beside `x.jpg`, or `x.jpg` and
`x.png` side by side) is refused before anything is written. An image that cannot be read or
processed is listed in the run's failures, the others are predicted. Files are written whole or
not at all (`twins.storage.write_bytes`), to a folder or an object-store URL.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from twins import storage
from twins.data.image_input import as_tensor
from twins.device import select_device
from twins.errors import TwinsError
from twins.export.runtimes.artifact import Artifact
from twins.tasks.head import named_model_from_weights
from twins.tasks.segment.ade20k import ADE20K_PALETTE
from twins.tasks.segment.evaluate import smallest_side
from twins.tasks.segment.export import smallest_dense_side
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.metrics import predict_labels
from twins.tasks.segment.slide import check_window, slide_labels
from twins.tasks.segment.transforms import IMG_SCALE, MEAN, STD, SegTestTransform, pad_to_side
from twins.weights import StateDict

OVERLAY_ALPHA = 0.5  # the colours' share of an overlay pixel
OVERLAY_ROWS = 256  # overlays are blended this many rows at a time (in float32)
LABEL_SUFFIX, OVERLAY_SUFFIX = ".png", "_overlay.png"


@dataclass
class SegmentationPrediction:
    image: str
    label_map: str  # the written label PNG
    overlay: str  # the written overlay PNG
    classes: list[str]  # the names of the classes present, in class order
    counts: dict[str, int] = field(default_factory=dict)  # their pixels


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
                    "counts": p.counts,
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
        weights: StateDict | Artifact,
        *,
        arch: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        device: str = "auto",
        output: str | None = None,
        slide: Sequence[int] | None = None,
    ) -> None:
        self.device = select_device(device)
        # (crop, stride) of square sliding windows, or None for the whole-image test.
        self.window = None if slide is None else ([slide[0]] * 2, [slide[1]] * 2)
        if self.window is not None:
            check_window(*self.window)
        metadata = weights.metadata
        if isinstance(weights, StateDict):
            model = named_model_from_weights(HEADS, weights, arch, model_args)
            self.model: Any = model.to(self.device).eval()
            self.smallest = smallest_side(self.model)
            num_classes = self.model.num_classes
        else:  # an exported segmenter: its graph takes sides from twice the backbone's
            self.model = weights
            self.smallest = smallest_dense_side(metadata["arch"], metadata.get("model_args") or {})
            num_classes = int(metadata["num_classes"])
        # Where rows' label maps and overlays go (None: rows hold the label map itself).
        self.output = output
        self.names: dict[str, str] = {}
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
        if self.window is not None:
            return slide_labels(self._logits, inputs[0], image.shape[-2:], *self.window).cpu()
        return predict_labels(self._logits(inputs), image.shape[-2:])[0].cpu()

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The logits of a batch, padded for the backbone to its smallest side."""
        height, width = inputs.shape[-2:]
        logits = self.model(pad_to_side(inputs, self.smallest))["out"].float()
        return logits[..., :height, :width]

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
        """The image blended with its classes' colours, as an RGB PNG (blended a band of rows
        at a time: float32 copies of a whole large photo would take gigabytes)."""
        pixels, labels = image.permute(1, 2, 0).numpy(), classes.numpy()
        blended = np.empty_like(pixels)
        for top in range(0, len(pixels), OVERLAY_ROWS):
            rows = slice(top, top + OVERLAY_ROWS)
            colours = self.palette[labels[rows]].astype(np.float32)
            mix = (1 - OVERLAY_ALPHA) * pixels[rows].astype(np.float32) + OVERLAY_ALPHA * colours
            blended[rows] = mix.round().astype(np.uint8)
        return _png_bytes(Image.fromarray(blended))

    columns = ("label_map", "overlay", "classes", "counts")

    def plan(self, names: Sequence[str]) -> None:
        """Place the label maps and overlays of the images `names` under `output` (see the
        module's docstring), refused before anything is written where two would be one or one
        would be an input."""
        if self.output is not None:
            check_outputs(names, self.output)
            self.names = dict(zip(names, output_names(names), strict=True))

    def rows(self, items: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        """One row per image, in order: image, label_map and overlay (the files written under
        `output`; without one, label_map is the H x W array of class indices), the names of
        the classes present and their pixel counts; or image and error."""
        for name, source in items:
            try:
                image = as_tensor(source)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                yield {"image": name, "error": f"unreadable image: {error}"}
                continue
            try:
                classes = self.label_map(image)
                files = self._write(name, image, classes)
            except (RuntimeError, ValueError, MemoryError) as error:  # e.g. out of memory
                yield {"image": name, "error": f"could not be processed: {error}"}
                continue
            counts = torch.bincount(classes.flatten(), minlength=len(self.class_names)).tolist()
            present = {self.class_names[i]: n for i, n in enumerate(counts) if n}
            label_map, overlay = files if files else (classes.numpy(), None)
            yield {
                "image": name,
                "label_map": label_map,
                "overlay": overlay,
                "classes": list(present),
                "counts": present,
            }

    def _write(self, name: str, image: torch.Tensor, classes: torch.Tensor) -> tuple | None:
        """(label file, overlay file) written for image `name` under `output`; None without."""
        if self.output is None:
            return None
        if str(name) not in self.names:  # not planned with the others: placed alone
            self.plan([str(name)])
        placed = self.names[str(name)]
        label_png, overlay_png = self.label_png(classes), self.overlay_png(image, classes)
        label_file = storage.join(self.output, placed + LABEL_SUFFIX)
        overlay_file = storage.join(self.output, placed + OVERLAY_SUFFIX)
        if not storage.is_remote(self.output):
            Path(label_file).parent.mkdir(parents=True, exist_ok=True)
        storage.write_bytes(label_file, label_png)
        storage.write_bytes(overlay_file, overlay_png)
        return label_file, overlay_file

    def predict(self, paths: Sequence[Path]) -> SegmentationRun:
        """Label maps and overlays of `paths` under `output` (see the module's docstring)."""
        run = SegmentationRun(preprocessing=dict(self.preprocessing))
        names = [str(path) for path in paths]
        self.plan(names)
        for row in self.rows(zip(names, names, strict=True)):
            if "error" in row:
                run.failures.append((row["image"], row["error"]))
                continue
            prediction = SegmentationPrediction(
                row["image"], row["label_map"], row["overlay"], row["classes"], row["counts"]
            )
            run.predictions.append(prediction)
        return run


def output_names(paths: Sequence[Path]) -> list[str]:
    """Each image's path relative to the deepest folder holding all of `paths`, without its
    extension: its label map is written as `<name>.png` under the output folder."""
    absolute = [os.path.abspath(path) for path in paths]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return [os.path.relpath(os.path.splitext(path)[0], common) for path in absolute]


def check_outputs(paths: Sequence[Path], output: str) -> None:
    """TwinsError, before anything is written, where two files written for `paths` under
    `output` would be one, or one would be an input image."""
    written: dict[str, Path] = {}
    for path, name in zip(paths, output_names(paths), strict=True):
        for suffix in (LABEL_SUFFIX, OVERLAY_SUFFIX):
            target = storage.join(output, name + suffix)
            if target in written:
                raise TwinsError(
                    f"{written[target]} and {path} would both be written as {target}: "
                    "predict them into different output folders (--output)",
                    argument="inputs",
                )
            written[target] = path
    if storage.is_remote(output):
        return
    inputs = {os.path.realpath(path): path for path in paths}
    for target, path in written.items():
        if os.path.realpath(target) in inputs:
            raise TwinsError(
                f"the prediction of {path} would overwrite the input image "
                f"{inputs[os.path.realpath(target)]}: write the predictions to another folder",
                argument="output",
            )


def predict_segmentation(
    weights: StateDict | Artifact,
    paths: Sequence[Path],
    output: str | os.PathLike | None = None,
    **options: Any,
) -> SegmentationRun:
    """Label maps and overlays of `paths` written to `output` (see the module's docstring);
    `options`: `SegmentationPredictor`'s."""
    return row_predictor(weights, output=output, required=True, **options).predict(paths)


def row_predictor(
    weights: StateDict | Artifact,
    checkpoint: Any = None,
    *,
    output: str | os.PathLike | None = None,
    required: bool = False,
    **options: Any,
) -> SegmentationPredictor:
    """The segmenter in `weights` (or an exported one), writing under `output` (a folder made
    here, or a URL); `required`: refuse to go without one."""
    if output is None and required:
        raise TwinsError(
            "a segmenter's predictions are label maps: name a folder for them (--output DIR)",
            argument="output",
        )
    if output is not None:
        output = str(output)
        output = output if storage.is_remote(output) else str(Path(output).expanduser())
    return SegmentationPredictor(weights, output=output, **options)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
