"""Small COCO-format data sets for the tests: images of coloured rectangles, each object a
rectangle of its own colour, with boxes, polygons, RLEs, a crowd region and bad annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# Categories in the file's order (not sorted): labels follow the sorted ids 3, 7, 11.
CATEGORIES = [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}, {"id": 11, "name": "bar"}]
COLOURS = {3: (220, 30, 30), 7: (30, 200, 40), 11: (40, 60, 230)}
BACKGROUND = (128, 128, 128)


def polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def rectangle_mask(x: int, y: int, w: int, h: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd form: run lengths in column-major order, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_image(path: Path, width: int, height: int, objects: list[tuple[int, list[int]]]) -> None:
    """A picture of `objects` ((category id, integer box x, y, w, h)) in their colours."""
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for category, (x, y, w, h) in objects:
        pixels[y : y + h, x : x + w] = COLOURS[category]
    Image.fromarray(pixels).save(path)


def annotation(id_: int, image_id: int, category: int, box: list[float], **extra) -> dict:
    return {
        "id": id_,
        "image_id": image_id,
        "category_id": category,
        "bbox": box,
        "area": box[2] * box[3] if len(box) == 4 else 0,
        "iscrowd": 0,
        **extra,
    }


def write_split(root: Path, split: str, images: list[dict], annotations: list[dict]) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    content = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))


def write_coco_train(root: Path) -> Path:
    """`ROOT/annotations/instances_train.json` and `ROOT/train/`:
    a.png (64x48): a polygon (cat 3), a compressed RLE (cat 7), a crowd region (cat 11, an
    uncompressed RLE) and a box running past the right and bottom edges (cat 11);
    b.png (32x32): only bad annotations, one of each kind; c.png: no annotation;
    broken.png: not an image; d.png: stored at another size than the file says."""
    (root / "train").mkdir(parents=True)
    write_image(root / "train" / "a.png", 64, 48, [(3, [4, 6, 20, 16]), (7, [30, 20, 24, 20])])
    write_image(root / "train" / "b.png", 32, 32, [])
    write_image(root / "train" / "c.png", 32, 32, [])
    (root / "train" / "broken.png").write_bytes(b"not a png at all")
    write_image(root / "train" / "d.png", 32, 32, [(3, [2, 2, 10, 10])])
    images = [
        {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
        {"id": 3, "file_name": "c.png", "width": 32, "height": 32},
        {"id": 4, "file_name": "broken.png", "width": 32, "height": 32},
        {"id": 5, "file_name": "d.png", "width": 40, "height": 40},
    ]
    good = polygon(2, 2, 10, 10)
    annotations = [
        annotation(1, 1, 3, [4, 6, 20, 16], segmentation=polygon(4, 6, 20, 16)),
        annotation(
            2,
            1,
            7,
            [30, 20, 24, 20],
            segmentation=compressed_rle(rectangle_mask(30, 20, 24, 20, 48, 64)),
        ),
        annotation(
            3,
            1,
            11,
            [0, 0, 10, 10],
            iscrowd=1,
            segmentation=uncompressed_rle(rectangle_mask(0, 0, 10, 10, 48, 64)),
        ),
        annotation(4, 1, 11, [56, 40, 20, 20], segmentation=polygon(56, 40, 8, 8)),
        annotation(5, 2, 3, [40, 40, 5, 5], segmentation=good),  # outside
        annotation(6, 2, 3, [2, 2, 0.5, 10], segmentation=good),  # under a pixel
        annotation(7, 2, 99, [2, 2, 10, 10], segmentation=good),  # unknown category
        annotation(8, 2, 3, [2, 2, 10, 10], segmentation=[]),  # empty polygon
        annotation(9, 2, 3, [2, 2, 10, 10], segmentation=[[1, 1, 5, 5]]),  # a part of 2 points
        annotation(
            10,
            2,
            3,
            [2, 2, 10, 10],
            segmentation=compressed_rle(rectangle_mask(2, 2, 10, 10, 20, 20)),
        ),  # RLE of another size
        annotation(11, 2, 3, [1, 2, 3], segmentation=good),  # malformed box
        annotation(12, 4, 3, [2, 2, 10, 10], segmentation=good),
        annotation(13, 5, 3, [2, 2, 10, 10], segmentation=good),
    ]
    write_split(root, "train", images, annotations)
    return root


# The evaluation split: every box inside its image, so ground truth as detections scores 100.
VAL_OBJECTS = {
    1: [(3, [4, 6, 20, 16]), (7, [30, 20, 24, 20])],
    2: [(3, [10, 4, 12, 12]), (11, [2, 24, 28, 6])],
    3: [],
}


def write_coco_val(root: Path) -> Path:
    """`ROOT/annotations/instances_val.json` and `ROOT/val/`: v1.png (64x48) with a cat-3 and a
    cat-7 object and a cat-11 crowd region, v2.png (32x32) with a cat-3 and a cat-11 object,
    v3.png (32x32) with none. Masks: polygons, and a compressed RLE for cat 7."""
    (root / "val").mkdir(parents=True)
    sizes = {1: (64, 48), 2: (32, 32), 3: (32, 32)}
    images, annotations = [], []
    for image_id, objects in VAL_OBJECTS.items():
        width, height = sizes[image_id]
        write_image(root / "val" / f"v{image_id}.png", width, height, objects)
        images.append(
            {"id": image_id, "file_name": f"v{image_id}.png", "width": width, "height": height}
        )
        for category, box in objects:
            mask = rectangle_mask(*box, height, width)
            segmentation = compressed_rle(mask) if category == 7 else polygon(*box)
            annotations.append(
                annotation(len(annotations) + 1, image_id, category, box, segmentation=segmentation)
            )
    crowd = rectangle_mask(50, 0, 14, 10, 48, 64)
    annotations.append(
        annotation(
            len(annotations) + 1,
            1,
            11,
            [50, 0, 14, 10],
            iscrowd=1,
            segmentation=uncompressed_rle(crowd),
        )
    )
    write_split(root, "val", images, annotations)
    return root
