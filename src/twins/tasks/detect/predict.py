"""`twins predict` on a detector: COCO result objects per image, and pictures of them.

Images are decoded as the COCO data set decodes them (`twins.data.images.decode_rgb_tensor`)
and resized as evaluation resizes them: by the data pipeline (`det_transforms.eval_transform` at
the model's `min_size` / `max_size`) for a detector trained with its own resize off
(`resize_in_model: false`, every detector the fit loop trains), else inside the model. Each
image goes through the model alone, so its detections do not depend on the others' sizes.

The results are `twins.tasks.detect.metrics.detections_to_coco`'s, as `twins eval` scores them:
`category_id` as in the training annotations (the checkpoint's `dataset.category_ids`), `bbox`
x, y, w, h in the original pixels, `score`, `segmentation` as RLE for Mask R-CNN, and
`file_name`: the image's path relative to the folder that holds all the inputs (just its name
when they share one folder), so same-named files of two folders stay apart. `image_id` comes
from a COCO file where one is given (`coco`: the entry whose `file_name` is the end of the
image's path), so `COCO.loadRes` scores the list against the right images; else images are
numbered 1, 2, ... in the order the inputs name them. It is never read from a file name: a
user's `7.png` may well be image 12.

Pictures (`output`): `<output>/<path relative to the inputs' folder>/<stem>_detections.png`
(`<stem>_<extension>_detections.png` where two inputs of one folder share a stem), the image
with each detection scoring at least `min_score` drawn: its mask (Mask R-CNN) and box in its
class's colour, and "name score" above the box. A picture that would land on an input, or on
another picture, is refused before anything is written.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from twins.atomic import atomic_path
from twins.data.image_input import as_tensor, image_bytes, is_file_like
from twins.device import select_device
from twins.errors import TwinsError
from twins.export.runtimes.artifact import Artifact
from twins.notes import note
from twins.tasks.detect.data import CategoryMap, decode_image
from twins.tasks.detect.heads import HEADS
from twins.tasks.detect.metrics import detections_to_coco
from twins.tasks.detect.transforms import eval_transform
from twins.tasks.head import named_model_from_weights
from twins.tasks.segment.ade20k import ADE20K_PALETTE
from twins.weights.state_dict import StateDict

# Drawn detections score at least this by default (the results list every detection).
MIN_SCORE = 0.5
PICTURE_SUFFIX = "_detections.png"
MASK_ALPHA = 0.45
NAMED = 5  # skipped images named in the note


@dataclass
class ImageDetections:
    image: str
    results: list[dict[str, Any]]  # COCO result objects, best score first
    picture: Path | None = None


@dataclass
class DetectionRun:
    predictions: list[ImageDetections] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    names: dict[int, str] = field(default_factory=dict)  # category id -> class name
    min_score: float = MIN_SCORE  # the lowest score shown (`format`) and drawn

    def to_json(self) -> list[dict[str, Any]]:
        """One list of COCO result objects over all images (what `COCO.loadRes` reads)."""
        return [result for prediction in self.predictions for result in prediction.results]

    def format(self) -> str:
        """Per image: its detections scoring at least `min_score`, and its picture; then the
        failures."""
        min_score, lines = self.min_score, []
        for prediction in self.predictions:
            shown = [r for r in prediction.results if r["score"] >= min_score]
            lines.append(
                f"{prediction.image}: {len(shown)} detection(s) scoring {min_score:g} or more "
                f"({len(prediction.results)} in all)"
            )
            for result in shown:
                x, y, w, h = result["bbox"]
                lines.append(
                    f"  {self.names.get(result['category_id'], result['category_id']):<12} {100 * result['score']:6.2f}%  box x {x:.0f}, "
                    f"y {y:.0f}, w {w:.0f}, h {h:.0f}"
                )
            if prediction.picture is not None:
                lines.append(f"  picture: {prediction.picture}")
        for image, reason in self.failures:
            lines.append(f"skipped {image}: {reason}")
        return "\n".join(lines)


def category_map(metadata: Mapping[str, Any], num_classes: int) -> CategoryMap:
    """Labels 1..K -> the training annotations' category ids and names, from the file's
    `dataset` metadata; ids 1..K (and the class names, else the ids) where it has none."""
    dataset = metadata.get("dataset") if isinstance(metadata.get("dataset"), Mapping) else {}
    ids = dataset.get("category_ids")
    names = dataset.get("category_names") or metadata.get("class_names")
    if not (isinstance(ids, Sequence) and len(ids) == num_classes):
        note(
            f"the weights do not record the category ids of their {num_classes} classes: "
            f"writing labels 1..{num_classes} as category_id"
        )
        ids = list(range(1, num_classes + 1))
    if not (isinstance(names, Sequence) and len(names) == num_classes):
        names = [str(i) for i in ids]
    return CategoryMap([{"id": int(i), "name": str(n)} for i, n in zip(ids, names, strict=True)])


def input_root(paths: Sequence[Path]) -> Path:
    """The deepest folder that holds every one of `paths`."""
    return Path(os.path.commonpath([path.absolute().parent for path in paths]))


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` (`input_root`), with forward slashes."""
    return path.absolute().relative_to(root).as_posix()


def picture_paths(paths: Sequence[Path], root: Path, output: Path) -> list[Path]:
    """Where each image's picture goes under `output`, keeping its path relative to `root`;
    TwinsError, before anything is written, where one would land on an input or two on one
    file."""
    relative = [path.absolute().relative_to(root) for path in paths]
    stems = Counter((name.parent, name.stem) for name in relative)
    pictures = [
        output
        / name.parent
        / (
            f"{name.stem}{PICTURE_SUFFIX}"
            if stems[name.parent, name.stem] == 1
            else f"{name.stem}_{name.suffix.lstrip('.')}{PICTURE_SUFFIX}"
        )
        for name in relative
    ]
    inputs = {path.resolve(): path for path in paths}
    drawn: dict[Path, Path] = {}
    for path, picture in zip(paths, pictures, strict=True):
        target = picture.resolve()
        if target in inputs:
            raise TwinsError(
                f"the picture of {path} would overwrite the input {inputs[target]}: choose an "
                "--output folder that holds no input images",
                argument="output",
            )
        if target in drawn:
            raise TwinsError(
                f"the pictures of {drawn[target]} and {path} would both be {picture}: rename "
                "one of them",
                argument="output",
            )
        drawn[target] = path
    return pictures


def coco_image_ids(coco: str | os.PathLike, paths: Sequence[Path]) -> list[int | None]:
    """Each image's id in the COCO file `coco`: the `images` entry whose `file_name` is the
    end of the image's path (the longest such); None for an image the file does not list."""
    try:
        with open(coco, encoding="utf-8") as file:
            content = json.load(file)
        entries = content["images"]
        ids = {str(entry["file_name"]): entry["id"] for entry in entries}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TwinsError(
            f"--coco {coco} is not a COCO file whose images have file_name and id ({error}); "
            "give the instances file of these images",
            argument="coco",
        ) from error
    for key in ("file_name", "id"):  # one of them repeated would score a result twice
        seen: dict[Any, Any] = {}
        for entry in entries:
            if entry[key] in seen:
                raise TwinsError(
                    f"images entries {json.dumps(seen[entry[key]])[:100]} and "
                    f"{json.dumps(entry)[:100]} of --coco {coco} share the {key} "
                    f"{entry[key]!r}: give each image its own",
                    argument="coco",
                )
            seen[entry[key]] = entry
    found: list[int | None] = []
    taken: dict[Any, Path] = {}
    for path in paths:
        parts = path.absolute().parts
        names = ("/".join(parts[start:]) for start in range(1, len(parts)))
        image_id = next((ids[name] for name in names if name in ids), None)
        if image_id is not None and image_id in taken:
            raise TwinsError(
                f"{taken[image_id]} and {path} both match image {image_id} of --coco {coco}: "
                "predict one folder at a time, or give file_names with their folders",
                argument="coco",
            )
        taken[image_id] = path
        found.append(image_id)
    return found


class DetectionPredictor:
    """A detector from its weights, or an exported one (`twins.export.runtimes`), ready to
    detect objects in images."""

    def __init__(
        self,
        weights: StateDict | Artifact,
        *,
        arch: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        device: str = "auto",
        output: str | os.PathLike | None = None,
        min_score: float | None = None,
    ) -> None:
        self.device = select_device(device)
        if isinstance(weights, StateDict):
            self.model: Any = named_model_from_weights(HEADS, weights, arch, model_args)
            self.model.to(self.device).eval()
            num_classes, args = self.model.num_classes, self.model.model_args
        else:  # an exported detector, run image by image as the eager one
            self.model = weights
            num_classes = int(weights.metadata["num_classes"])
            args = weights.metadata.get("model_args") or {}
        self.categories = category_map(weights.metadata, num_classes)
        self.resize = None
        if args.get("resize_in_model", True) is False:  # resized by the data pipeline
            min_size = args["min_size"]
            short_side = min_size[-1] if isinstance(min_size, Sequence) else min_size
            self.resize = eval_transform(int(short_side), int(args["max_size"]))
        # Rows' pictures: drawn under `output` (None: none), detections scoring min_score up.
        self.output = None if output is None else Path(output)
        self.min_score = check_min_score(min_score)
        self.pictures: dict[str, Path] = {}

    @torch.inference_mode()
    def detect(
        self, path: Path, image_id: int, file_name: str
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """(the image as decoded, uint8 3 x H x W; its COCO result objects, best first).
        Raises ValueError saying why where the image cannot be read or processed."""
        try:
            pixels, _ = decode_image(path.read_bytes())
        except (OSError, ValueError, RuntimeError, Image.DecompressionBombError) as error:
            raise ValueError(f"unreadable image: {error}") from error
        return pixels, self.detect_pixels(pixels, image_id, file_name)

    @torch.inference_mode()
    def detect_pixels(
        self, pixels: torch.Tensor, image_id: int, file_name: str
    ) -> list[dict[str, Any]]:
        """The COCO result objects of an image (uint8 3 x H x W), best first, in its pixels."""
        original_size = tuple(pixels.shape[-2:])
        try:
            image = tv_tensors.Image(pixels)
            if self.resize is not None:
                image = self.resize(image)
            inputs = image.as_subclass(torch.Tensor).to(self.device).float().div_(255)
            (found,) = self.model([inputs])
        except (RuntimeError, ValueError) as error:  # e.g. a side resized to no pixels
            height, width = original_size
            raise ValueError(f"cannot be processed at {width}x{height}: {error}") from error
        results = detections_to_coco(
            found,
            image_id,
            file_name,
            tuple(inputs.shape[-2:]),
            original_size,
            self.categories,
        )
        results.sort(key=lambda r: -r["score"])
        return results

    columns = ("boxes", "labels", "category_ids", "scores", "masks", "picture")

    def plan(self, names: Sequence[str]) -> None:
        """Place the pictures of the images `names` under `output`, refused before anything is
        written where one would land on an input or two on one file."""
        if self.output is not None and names:
            paths = [Path(name) for name in names]
            pictures = picture_paths(paths, input_root(paths), self.output)
            self.pictures = dict(zip(names, pictures, strict=True))

    def rows(self, items: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        """One row per image, in order: its detections, best first, in its original pixels:
        `boxes` (x0, y0, x1, y1), `labels` (class names), `category_ids` (the training
        annotations'), `scores`, `masks` (COCO RLE, Mask R-CNN), and `picture` where drawn;
        or image and error."""
        for name, source in items:
            try:  # files decoded as the COCO data set decodes them
                pixels = decode_image(image_bytes(source))[0] if is_file_like(source) else None
                pixels = as_tensor(source) if pixels is None else pixels
            except (OSError, ValueError, RuntimeError, Image.DecompressionBombError) as error:
                yield {"image": name, "error": f"unreadable image: {error}"}
                continue
            try:
                results = self.detect_pixels(pixels, 0, os.path.basename(str(name)))
            except ValueError as error:
                yield {"image": name, "error": str(error)}
                continue
            yield detections_row(name, results, self.categories, self._draw(name, pixels, results))

    def _draw(self, name: str, pixels: torch.Tensor, results: list[dict]) -> str | None:
        if self.output is None:
            return None
        if str(name) not in self.pictures:  # not planned with the others: placed alone
            self.plan([str(name)])
        path = self.pictures[str(name)]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_picture(draw_detections(pixels, results, self.categories, self.min_score), path)
        return str(path)


def detections_row(
    image: str, results: Sequence[Mapping[str, Any]], categories: CategoryMap, picture: Any
) -> dict[str, Any]:
    """A row of an image's COCO result objects (see `DetectionPredictor.rows`)."""
    names = dict(zip(categories.category_ids, categories.names, strict=True))
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)]
    row = {
        "image": image,
        "boxes": [[round(float(v), 3) for v in box] for box in boxes],
        "labels": [names[r["category_id"]] for r in results],
        "category_ids": [r["category_id"] for r in results],
        "scores": [round(float(r["score"]), 6) for r in results],
    }
    if any("segmentation" in r for r in results):
        row["masks"] = [r["segmentation"] for r in results]
    return row | ({"picture": picture} if picture is not None else {})


def check_min_score(min_score: float | None) -> float:
    min_score = MIN_SCORE if min_score is None else min_score
    if not 0 <= min_score <= 1:
        raise TwinsError(
            f"min_score is a detection score in [0, 1], not {min_score!r}", argument="min_score"
        )
    return min_score


def row_predictor(
    weights: StateDict | Artifact, checkpoint: Any = None, **options: Any
) -> DetectionPredictor:
    """The detector in `weights` (or an exported one); `options`: `DetectionPredictor`'s."""
    return DetectionPredictor(weights, **options)


def predict_detections(
    weights: StateDict | Artifact,
    paths: Sequence[Path],
    *,
    output: str | os.PathLike | None = None,
    min_score: float | None = None,
    arch: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    device: str = "auto",
    coco: str | os.PathLike | None = None,
) -> DetectionRun:
    """Detections in every image of `paths`, with a picture each under `output` when given;
    images that cannot be read or processed are listed, not fatal. `coco`: a COCO file whose
    `images` give the ids (see the module's notes)."""
    min_score = check_min_score(min_score)
    root = input_root(paths)
    image_ids: list[int | None] = (
        coco_image_ids(coco, paths) if coco is not None else list(range(1, len(paths) + 1))
    )
    pictures: list[Path | None] = [None] * len(paths)
    if output is not None:
        pictures = list(picture_paths(paths, root, Path(output)))
    predictor = DetectionPredictor(weights, arch=arch, model_args=model_args, device=device)
    categories = predictor.categories
    names = dict(zip(categories.category_ids, categories.names, strict=True))
    run = DetectionRun(names=names, min_score=min_score)
    for path, image_id, picture_path in zip(paths, image_ids, pictures, strict=True):
        if image_id is None:
            run.failures.append((str(path), f"not among the images of --coco {coco}"))
            continue
        try:
            pixels, results = predictor.detect(path, image_id, relative_name(path, root))
        except ValueError as error:
            run.failures.append((str(path), str(error)))
            continue
        prediction = ImageDetections(str(path), results, picture_path)
        if picture_path is not None:
            picture_path.parent.mkdir(parents=True, exist_ok=True)
            picture = draw_detections(pixels, results, predictor.categories, min_score)
            write_picture(picture, picture_path)
        run.predictions.append(prediction)
    if run.failures:  # said on stderr too: a --json list of results has no room for them
        named = "; ".join(f"{image}: {reason}" for image, reason in run.failures[:NAMED])
        more = f" (and {len(run.failures) - NAMED} more)" if len(run.failures) > NAMED else ""
        note(f"{len(run.failures)} of {len(paths)} images skipped: {named}{more}")
    return run


def draw_detections(
    pixels: torch.Tensor,
    results: Sequence[Mapping[str, Any]],
    categories: CategoryMap,
    min_score: float = MIN_SCORE,
) -> torch.Tensor:
    """The image (uint8 3 x H x W) with the results scoring at least `min_score` drawn: masks,
    then boxes with "name score" labels, each in its class's colour."""
    shown = [r for r in results if r["score"] >= min_score]
    if not shown:
        return pixels
    names = dict(zip(categories.category_ids, categories.names, strict=True))
    colours = [class_colour(categories.label(r["category_id"])) for r in shown]
    picture = pixels
    with_masks = [(r, c) for r, c in zip(shown, colours, strict=True) if "segmentation" in r]
    if with_masks:
        masks = np.stack([mask_utils.decode(r["segmentation"]) for r, _ in with_masks])
        picture = draw_segmentation_masks(
            picture,
            torch.from_numpy(masks).bool(),
            alpha=MASK_ALPHA,
            colors=[c for _, c in with_masks],
        )
    boxes = torch.tensor([r["bbox"] for r in shown], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x0, y0, x1, y1
    labels = [f"{names[r['category_id']]} {r['score']:.2f}" for r in shown]
    width = max(1, round(max(pixels.shape[-2:]) / 300))
    return draw_bounding_boxes(picture, boxes, labels=labels, colors=colours, width=width)


def class_colour(label: int) -> tuple[int, int, int]:
    """A fixed, distinct colour per label (mmsegmentation's ADE20K palette, from its second
    entry: the first is a dark grey)."""
    return tuple(ADE20K_PALETTE[1 + (label - 1) % (len(ADE20K_PALETTE) - 1)])


def write_picture(picture: torch.Tensor, path: str | os.PathLike) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(temporary, format="PNG")
