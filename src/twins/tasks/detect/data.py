"""COCO-format detection data: images and their boxes, labels and instance masks, read with
pycocotools.

Layouts (`coco_split_paths`): the COCO release, `ROOT/annotations/instances_{split}2017.json`
with the images in `ROOT/{split}2017/`; the same without the year,
`ROOT/annotations/instances_{split}.json` with `ROOT/{split}/` (what `twins demo --task detect`
writes); or any annotation file and image folder given to `CocoDataset` directly.

A sample is `(image, target)`: the image a `tv_tensors.Image` (uint8, 3 x H x W) and the target
torchvision's detectors take: `boxes` (`tv_tensors.BoundingBoxes`, XYXY, in pixels), `labels`
(int64, 1..K: the contiguous index of the category among the sorted category ids, plus one;
0 is torchvision's background), `masks` (`tv_tensors.Mask`, N x H x W, with `with_masks`),
`image_id` (the file's id) and `orig_size` ((height, width) as stored). `CategoryMap` turns
labels back into category ids.

What is left out of the targets, as mmdetection 2.8's CocoDataset leaves it out:
- crowd regions (`iscrowd: 1`): there is no ignore region in torchvision's detectors; COCOeval
  still sees them (`dataset.coco`), and ignores detections on them as COCO does;
- bad annotations, counted in `dataset.skipped_annotations` by reason and named in a warning
  with their image: a box that does not overlap the image, a box under 1 pixel wide or high (or
  with a non-positive `area`), a box that is not four finite numbers, an unknown category id,
  and, with `with_masks`, a polygon with no part of three points or more, an RLE of another
  size than its image, or no segmentation. Boxes that overlap the image only in part are
  clipped to it (mmdetection clips them when it resizes).
The evaluation ground truth (`dataset.coco`) keeps every annotation COCOeval can score, crowd
and tiny or outside boxes included, as the official numbers were computed; it leaves out only
those it cannot score (malformed box, unknown category, bad mask).

Images: with `drop_empty` (training, mmdetection's `filter_empty_gt`) an image without a
usable target is left out (crowd-only images too: torchvision cannot ignore their crowd
regions); without it (evaluation) every image of the file is kept. Annotations whose image_id
is not among the images are left out everywhere. One warning per file counts what is left out
(`dataset.summary()`, names in `dataset.left_out_images`). An image that cannot be decoded
(an empty file is called empty), whose decoded size differs from the annotation file's (the
message says where an EXIF quarter turn is why), or that the pipeline cannot take, is skipped
and counted as the classification data sets do (`twins.data.counted`): the data set returns
None for it.

Refused in one line, naming both entries: two images with one id (they would merge), two
categories with one id or one name (their per-class numbers would merge); and an empty
categories list.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from twins.data.counted import CountedReads, ImageSample
from twins.data.images import decode_rgb_tensor
from twins.errors import TwinsError

logger = logging.getLogger(__name__)

# Images named one by one in the warnings about bad annotations; the rest are summed up.
WARNED_IMAGES = 20

OUTSIDE = "box outside the image"
TOO_SMALL = "box under 1 pixel"
MALFORMED_BOX = "malformed box"
UNKNOWN_CATEGORY = "unknown category"
EMPTY_POLYGON = "empty polygon"
MALFORMED_RLE = "RLE of another size or malformed"
NO_MASK = "no segmentation"
# Why an image is left out of training (`drop_empty`), and how many are named in the summary.
NO_ANNOTATIONS = "without a usable annotation"
CROWD_ONLY = "with crowd regions only"
NAMED = 3
# Reasons that keep an annotation out of the evaluation ground truth too: COCOeval cannot
# score them. Boxes outside the image or under a pixel stay there, as in COCO's own files.
_UNSCORABLE = {MALFORMED_BOX, UNKNOWN_CATEGORY, EMPTY_POLYGON, MALFORMED_RLE, NO_MASK}


class CategoryMap:
    """COCO category ids <-> torchvision labels: label = index among the sorted ids + 1."""

    def __init__(self, categories: Sequence[dict[str, Any]]) -> None:
        by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        self.category_ids: list[int] = sorted(by_id)
        self.names: list[str] = [by_id[i] for i in self.category_ids]
        self._labels = {category: index + 1 for index, category in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.category_ids)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._labels

    def label(self, category_id: int) -> int:
        """The torchvision label (1..K) of COCO category `category_id`."""
        return self._labels[category_id]

    def category_id(self, label: int) -> int:
        """The COCO category id of torchvision label `label` (1..K)."""
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} is not in 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]


def first_difference(ours: Sequence[Any], theirs: Sequence[Any]) -> str:
    """Where two category lists first part: "position 6: 12 vs 13" (or the end of one)."""
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"position {index + 1}: {a!r} vs {b!r}"
    shorter, longer = sorted((ours, theirs), key=len)
    extra = longer[len(shorter)]
    return f"{len(ours)} vs {len(theirs)} categories, the first extra one {extra!r}"


def coco_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of `split` ("train", "val") under `root`, in the COCO
    release layout or the year-less one; TwinsError naming both when neither is there."""
    root = Path(root).expanduser()
    layouts = [
        (root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json"),
        (root / split, root / "annotations" / f"instances_{split}.json"),
    ]
    for images, annotation_file in layouts:
        if annotation_file.is_file() and images.is_dir():
            return images, annotation_file
    raise TwinsError(
        f"no COCO-format {split} split in {root}: expected annotations/instances_{split}2017.json "
        f"with {split}2017/, or annotations/instances_{split}.json with {split}/; set data_url",
        argument="data_url",
    )


def open_coco_split(
    root: str | Path,
    split: str,
    transforms: Callable[..., Any] | None = None,
    with_masks: bool = False,
    drop_empty: bool | None = None,
) -> CocoDataset:
    """The `split` of the COCO-format data at `root`; `drop_empty` defaults to True for
    "train" (images without a usable target are left out) and False otherwise."""
    images, annotations = coco_split_paths(root, split)
    if drop_empty is None:
        drop_empty = split == "train"
    return CocoDataset(
        images, annotations, transforms, with_masks=with_masks, drop_empty=drop_empty
    )


class CocoDataset(CountedReads, Dataset):
    """The images of `annotations` (a COCO instances file) found in the folder `images`, each
    with its detection target; `transforms(image, target)` (a transforms.v2 pipeline) is applied
    to both. See the module's doc for what is counted and left out."""

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        transforms: Callable[..., Any] | None = None,
        with_masks: bool = False,
        drop_empty: bool = False,
    ) -> None:
        self.root = Path(images).expanduser()
        self.annotation_file = Path(annotations).expanduser()
        self.transforms = transforms
        self.transform = None  # CountedReads' per-image transform: this data set's is joint
        self.with_masks = with_masks
        self.drop_empty = drop_empty
        content = _read_annotation_file(self.annotation_file)
        self.categories = CategoryMap(content["categories"])
        images_by_id = {image["id"]: image for image in content["images"]}
        self.skipped_annotations: Counter[str] = Counter()
        self.crowd_annotations = 0
        self.orphan_annotations = 0  # their image_id is not in `images`
        self._targets: dict[Any, list[tuple[list[float], int, Any]]] = {i: [] for i in images_by_id}
        scored = self._sort_annotations(content["annotations"], images_by_id)
        self.coco = _index(
            {
                "images": content["images"],
                "annotations": scored,
                "categories": content["categories"],
            }
        )
        self.image_ids = [
            i for i in images_by_id if self._targets[i] or not drop_empty
        ]  # the file's order, as pycocotools' getImgIds gives it
        self.dropped_images = len(images_by_id) - len(self.image_ids)
        self._images = images_by_id
        self.left_out_images = self._left_out(scored, drop_empty)
        self.init_counts(len(self.image_ids))
        summary = self.summary()
        if summary:
            logger.warning("%s: %s", self.annotation_file, summary)

    def _sort_annotations(
        self, annotations: list[dict[str, Any]], images: dict[Any, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Put each usable annotation in its image's target; count and name the bad ones.
        Returns the annotations COCOeval can score, with `id`, `area`, `iscrowd` filled in."""
        bad: dict[Any, list[str]] = {}
        scored = []
        ids = [a.get("id") for a in annotations]
        renumber = None in ids or len(set(ids)) != len(ids)  # pycocotools indexes by id
        for number, annotation in enumerate(annotations, start=1):
            image = images.get(annotation.get("image_id"))
            if image is None:
                self.orphan_annotations += 1  # pycocotools never reaches it either
                continue
            reason, box, segmentation = self._check(annotation, image)
            if reason is not None:
                self.skipped_annotations[reason] += 1
                bad.setdefault(image["id"], []).append(
                    f"{reason} (annotation {annotation.get('id')})"
                )
            if reason in _UNSCORABLE:
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            entry = {**annotation, "area": annotation.get("area", w * h)}
            entry["iscrowd"] = int(bool(annotation.get("iscrowd", 0)))
            if renumber:
                entry["id"] = number
            if segmentation is not None:
                entry["segmentation"] = segmentation
            scored.append(entry)
            if reason is not None:
                continue
            if entry["iscrowd"]:
                self.crowd_annotations += 1
                continue
            label = self.categories.label(annotation["category_id"])
            self._targets[image["id"]].append((box, label, segmentation))
        self._warn(bad, images, len(annotations))
        return scored

    def _left_out(self, scored: list[dict[str, Any]], drop_empty: bool) -> dict[str, list[str]]:
        """The file names of the images left out (`drop_empty`), by why: no usable annotation
        at all, or crowd regions only."""
        if not drop_empty:
            return {}
        crowded = {a["image_id"] for a in scored if a["iscrowd"]}
        left_out: dict[str, list[str]] = {NO_ANNOTATIONS: [], CROWD_ONLY: []}
        for image_id, image in self._images.items():
            if not self._targets[image_id]:
                reason = CROWD_ONLY if image_id in crowded else NO_ANNOTATIONS
                left_out[reason].append(str(image["file_name"]))
        return {reason: names for reason, names in left_out.items() if names}

    def summary(self) -> str:
        """What the data set leaves out, counted, with a few names: images without a usable
        annotation or with crowd regions only (training), crowd annotations (never trained
        on), annotations of an image_id the file's images do not list; "" when nothing."""
        parts = [
            f"{len(names)} image(s) {reason} left out (e.g. {', '.join(names[:NAMED])})"
            for reason, names in self.left_out_images.items()
        ]
        if self.crowd_annotations and self.drop_empty:
            parts.append(f"{self.crowd_annotations} crowd annotation(s) not trained on")
        if self.orphan_annotations:
            parts.append(
                f"{self.orphan_annotations} annotation(s) whose image_id is not in its images "
                "left out"
            )
        return "; ".join(parts)

    def _check(
        self, annotation: dict[str, Any], image: dict[str, Any]
    ) -> tuple[str | None, list[float], Any]:
        """(reason it is bad or None, box as XYXY clipped to the image, cleaned segmentation
        or None), in mmdetection's order of checks."""
        bbox = annotation.get("bbox")
        if not (
            isinstance(bbox, (list, tuple))
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            return MALFORMED_BOX, [], None
        if annotation.get("category_id") not in self.categories:
            return UNKNOWN_CATEGORY, [], None
        x, y, w, h = (float(v) for v in bbox)
        width, height = float(image["width"]), float(image["height"])
        overlap_w = max(0.0, min(x + w, width) - max(x, 0.0))
        overlap_h = max(0.0, min(y + h, height) - max(y, 0.0))
        box = [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]
        segmentation = None
        if self.with_masks:
            reason, segmentation = _check_segmentation(
                annotation.get("segmentation"), int(image["height"]), int(image["width"])
            )
            if reason is not None:
                return reason, box, None
        # A box of no width or height is too small wherever it lies (mmdetection tests the
        # overlap first and calls it outside; both are left out alike).
        if w < 1 or h < 1 or annotation.get("area", 1) <= 0:
            return TOO_SMALL, box, segmentation
        if overlap_w * overlap_h == 0:
            return OUTSIDE, box, segmentation
        return None, box, segmentation

    def _warn(
        self, bad: dict[Any, list[str]], images: dict[Any, dict[str, Any]], total: int
    ) -> None:
        for image_id in list(bad)[:WARNED_IMAGES]:
            logger.warning(
                "skipping %d annotations of %s: %s",
                len(bad[image_id]),
                self.root / images[image_id]["file_name"],
                "; ".join(bad[image_id]),
            )
        if bad:
            counts = ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.skipped_annotations.items())
            )
            named = (
                ""
                if len(bad) <= WARNED_IMAGES
                else f" (the first {WARNED_IMAGES} images named above)"
            )
            logger.warning(
                "skipped %d of %d annotations in %s on %d images: %s%s",
                sum(self.skipped_annotations.values()),
                total,
                self.annotation_file,
                len(bad),
                counts,
                named,
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    def file_name(self, index: int) -> str:
        return str(self.root / self._images[self.image_ids[index]]["file_name"])

    def __getitem__(self, index: int) -> ImageSample | None:
        image_id = self.image_ids[index]
        # Transformed inside the counted read: an image the pipeline cannot take is counted
        # and named like an undecodable one, never a stop of the run.
        sample = self.read_sample(index, None, lambda: self._read_transformed(image_id))
        if sample is None:
            return None
        image, target = sample[0]
        return ImageSample(image, target, sample.converted)

    def _read_transformed(self, image_id: Any) -> tuple[tuple[Any, dict[str, Any]], str]:
        (image, target), mode = self._read(image_id)
        if self.transforms is not None:
            try:
                image, target = self.transforms(image, target)
            except (RuntimeError, ValueError) as error:
                height, width = image.shape[-2:]
                raise ValueError(
                    f"the pipeline cannot take it at {width}x{height}: {error}"
                ) from error
        return (image, target), mode

    def _read(self, image_id: Any) -> tuple[tuple[tv_tensors.Image, dict[str, Any]], str]:
        """((image, target), mode the image was stored in); raises when the image cannot be
        decoded, has another size than the annotation file says, or a mask cannot be decoded."""
        info = self._images[image_id]
        data = (self.root / info["file_name"]).read_bytes()
        pixels, mode = decode_image(data)
        height, width = pixels.shape[-2:]
        if (height, width) != (info["height"], info["width"]):
            turned = (width, height) == (info["height"], info["width"]) and exif_turns(data)
            raise ValueError(
                f"decoded size {width}x{height} differs from the annotation file's "
                f"{info['width']}x{info['height']}"
                + (
                    ": its EXIF orientation turns it a quarter (images are read upright, as "
                    "displayed); give the upright size in the annotation file, or store the "
                    "pixels upright"
                    if turned
                    else ""
                )
            )
        objects = self._targets[image_id]
        boxes = torch.tensor([box for box, _, _ in objects], dtype=torch.float32).reshape(-1, 4)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([label for _, label, _ in objects], dtype=torch.int64),
            "image_id": image_id,
            "orig_size": (height, width),
        }
        if self.with_masks:
            masks = np.zeros((len(objects), height, width), dtype=np.uint8)
            for i, (_, _, segmentation) in enumerate(objects):
                masks[i] = annotation_mask(segmentation, height, width)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return (tv_tensors.Image(pixels), target), mode


def decode_image(data: bytes) -> tuple[torch.Tensor, str]:
    """`decode_rgb_tensor` of a file's bytes, with the reason an empty file or one that is not
    an image fails in words (Pillow's names an in-memory buffer, not the file)."""
    if not data:
        raise ValueError("the file is empty (0 bytes)")
    try:
        return decode_rgb_tensor(data)
    except UnidentifiedImageError as error:
        raise ValueError(
            f"not an image file Pillow can read ({len(data)} bytes, starting {data[:8]!r})"
        ) from error


def exif_turns(data: bytes) -> bool:
    """Whether the image's EXIF orientation turns it a quarter (values 5 to 8)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    except (OSError, ValueError):
        return False


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The H x W uint8 mask of a COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):  # polygons of one object
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def _check_segmentation(segmentation: Any, height: int, width: int) -> tuple[str | None, Any]:
    """(reason it is unusable or None, the segmentation with its unusable polygon parts left
    out: pycocotools reads a part of four numbers as a box, and fails on fewer)."""
    if isinstance(segmentation, list):
        parts = [
            [float(v) for v in part]
            for part in segmentation
            if isinstance(part, list) and len(part) >= 6 and len(part) % 2 == 0
        ]
        return (None, parts) if parts else (EMPTY_POLYGON, None)
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if list(size or ()) != [height, width] or not isinstance(counts, (list, str, bytes)):
            return MALFORMED_RLE, None
        return None, segmentation
    return NO_MASK, None


def _read_annotation_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            content = json.load(file)
    except FileNotFoundError as error:
        raise TwinsError(
            f"annotation file {path} not found; set data_url", argument="data_url"
        ) from error
    except (OSError, ValueError) as error:
        raise TwinsError(
            f"annotation file {path} is not readable JSON ({error}); repair or replace it",
            argument="data_url",
        ) from error
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(content.get(key) if isinstance(content, dict) else None, list)
    ]
    if missing:
        raise TwinsError(
            f"annotation file {path} has no {', '.join(missing)} list: a COCO instances file "
            "has images, annotations and categories",
            argument="data_url",
        )
    for key, needed in (("images", {"id", "file_name", "width", "height"}), ("categories", {"id"})):
        for entry in content[key]:
            if not (isinstance(entry, dict) and needed <= entry.keys()):
                raise TwinsError(
                    f"{key} entry {str(entry)[:80]} in {path} lacks {', '.join(sorted(needed))}; "
                    f"every COCO {key} entry has them",
                    argument="data_url",
                )
    if not all(isinstance(entry, dict) for entry in content["annotations"]):
        raise TwinsError(
            f"annotation file {path} has annotations that are not objects; repair or replace it",
            argument="data_url",
        )
    if not content["categories"]:
        raise TwinsError(
            f"annotation file {path} lists no categories: a COCO instances file names each "
            'class in its categories list ({"id": 1, "name": "person"}, ...); add them',
            argument="data_url",
        )
    # Two entries with one id would merge two images (or classes) into one; two categories with
    # one name would merge their per-class numbers.
    for key, field in (("images", "id"), ("categories", "id"), ("categories", "name")):
        seen: dict[Any, dict[str, Any]] = {}
        for entry in content[key]:
            value = entry.get(field)
            if field == "name" and value is None:
                continue
            if value in seen:
                raise TwinsError(
                    f"{key} entries {_brief(seen[value])} and {_brief(entry)} in {path} share "
                    f"the {field} {value!r}: give each its own {field}",
                    argument="data_url",
                )
            seen[value] = entry
    return content


def _brief(entry: dict[str, Any]) -> str:
    """An entry of the annotation file as it is named in a message."""
    return json.dumps(entry)[:100]


def _index(content: dict[str, Any]) -> COCO:
    """pycocotools' COCO over `content`, without the lines it prints."""
    coco = COCO()
    coco.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
