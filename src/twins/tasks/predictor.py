"""The one way to predict, for every task and every file: `Predictor(file_or_id)(images)` in
Python, `stream_predictions` behind `twins predict --out`.

`file_or_id` is any weights file `twins.load_weights` reads (a training checkpoint, `.pth`,
`.safetensors`, `.ckpt`), an exported model (`.onnx`, `.pt2`: run by its runtime, with the
preprocessing, classes, palette or categories its metadata carries), or the name of a variant
(`pcpvt_small`: its published ImageNet-1k weights). A predictor takes images as paths or URLs,
PIL images, NumPy arrays (H x W x 3, uint8) or tensors (3 x H x W, uint8 or float in 0..1),
one or a list, and gives for each the row `twins predict --out` writes, in the image's own
pixels: a classifier's `top` (index, label, probability); a segmenter's `label_map` (the
H x W class indices, or the label PNG written under `output`) and the pixel `counts` of the
classes present; a detector's `boxes` (x0, y0, x1, y1), `labels`, `category_ids`, `scores`
(and `masks`, COCO RLE).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twins.data.packed.format import file_sha256
from twins.device import select_device
from twins.errors import TwinsError
from twins.tasks import given_options, open_model, task_of_weights
from twins.weights.locate import local_weights_file


def resolve_file(file_or_id: str | os.PathLike) -> tuple[str | os.PathLike, str | None]:
    """(the file, the arch it holds where the name says so): a variant's name gives its
    published weights."""
    if isinstance(file_or_id, str) and not Path(file_or_id).exists():
        from twins.models.pretrained import HUB_REPOSITORIES, hub_weights
        from twins.models.registry import resolve_name

        try:
            variant = resolve_name(file_or_id)
        except (TwinsError, KeyError, ValueError):
            variant = None
        if variant in HUB_REPOSITORIES:
            return hub_weights(variant), variant
    return file_or_id, None


class Predictor:
    """`Predictor(file_or_id, device=...)(images)`: rows in the images' own pixels (see the
    module's notes). `options`: the task's predict options (a classifier's `topk`,
    `batch_size`, `image_size`, `crop_pct`; a segmenter's `output` folder for its PNGs; a
    detector's `output` folder for pictures and the `min_score` they show)."""

    def __init__(
        self,
        file_or_id: str | os.PathLike,
        *,
        device: str = "auto",
        arch: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        ema: bool | None = None,
        **options: Any,
    ) -> None:
        checkpoint, named = resolve_file(file_or_id)
        arch = arch or named
        source = open_model(checkpoint, arch=arch, ema=ema, device=device)
        self.task = task_of_weights(source, arch)
        given = given_options(self.task, options)
        self.metadata = dict(source.metadata)
        self.predictor = self.task.row_predictor(
            source, checkpoint, arch=arch, model_args=model_args, device=device, **given
        )

    def __call__(self, images: Any) -> Any:
        """The row of one image, or the rows of a list of them, in order."""
        one = not isinstance(images, (list, tuple))
        images = [images] if one else list(images)
        names = [_name(image, index) for index, image in enumerate(images)]
        self.predictor.plan([str(name) for name in names])
        rows = list(self.predictor.rows(zip(names, images, strict=True)))
        return rows[0] if one else rows


def _name(image: Any, index: int) -> Any:
    """A path's name as the rows give it; an image in memory is its place in the list."""
    return str(image) if isinstance(image, (str, os.PathLike)) else index


def model_record(checkpoint: str | os.PathLike, metadata: Mapping[str, Any], options: dict) -> dict:
    """What the rows of a file depend on: the model (its arch and the sha256 of what holds it)
    and the options that change them."""
    return {"arch": metadata.get("arch"), "sha256": _model_sha256(checkpoint), **options}


def _model_sha256(checkpoint: str | os.PathLike) -> str:
    """The sha256 of the model's file; of a folder (the Hub layout, an OpenVINO folder) or an
    OpenVINO .xml, of its files' names and sha256s, the .bin beside the .xml included. An id
    or URL is read where `load_weights` cached it."""
    path = local_weights_file(checkpoint)
    if path.is_file() and path.suffix.lower() != ".xml":
        return file_sha256(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if path.is_file() and path.with_suffix(".bin").is_file():
        files.append(path.with_suffix(".bin"))
    listing = "\n".join(f"{file.name} {file_sha256(file)}" for file in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def stream_predictions(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str],
    out: str | os.PathLike,
    *,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    ema: bool | None = None,
    device: str = "auto",
    overwrite: bool = False,
    **options: Any,
) -> Any:
    """`twins predict --out`: a row per image the inputs name (files, folders, globs,
    `@list.txt`, object-store prefixes, packed data sets) into `out`, continued where an
    earlier run on it stopped (`twins.inference.stream`)."""
    from twins.data.image_sources import list_images
    from twins.inference.rows import check_out
    from twins.inference.stream import stream

    check_out(out)
    if options.get("coco") is not None:
        raise TwinsError(
            "coco: the rows of --out name each image by its path; leave --coco out (it numbers "
            "the --json results)",
            argument="coco",
        )
    options.pop("coco", None)
    items, missing = list_images(inputs)
    if not items:
        reasons = "; ".join(f"{item}: {reason}" for item, reason in missing)
        raise TwinsError(
            f"no images to predict ({reasons}); name image files, folders, globs, @lists, "
            "object-store prefixes or packed data sets",
            argument="inputs",
        )
    checkpoint, named = resolve_file(checkpoint)
    arch = arch or named
    # Under torchrun each process takes the GPU of its local rank, as training does.
    device = str(select_device(device, int(os.environ.get("LOCAL_RANK", 0))))
    source = open_model(checkpoint, arch=arch, ema=ema, device=device)
    task = task_of_weights(source, arch)
    given = given_options(task, options)
    predictor = task.row_predictor(
        source, checkpoint, to_file=True, arch=arch, model_args=model_args, device=device, **given
    )
    record = model_record(checkpoint, source.metadata, {k: str(v) for k, v in given.items()})
    result = stream(predictor, items, out, model=record, overwrite=overwrite)
    result.failures = missing + result.failures
    return result
