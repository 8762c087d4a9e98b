"""A built-in segmentation data set: scenes of scikit-learn's handwritten digits.

Each scene is a colour image with 2 to 4 digits by default (of scikit-learn's 8 x 8 digits,
upscaled to a random side of 1/4 to 1/2 the scene's; `count` and `side` set both) painted in a
colour that stands out from a smooth random background; the digits do not overlap. By default a
digit lies anywhere and is dark on a light ground or light on a dark one; `cell` centres each
digit in its own cell of a square grid instead, and `light_ink` paints every digit light on a
darkened ground (the segmentation demo uses both: see `configs/demo_segment.yaml`). Its label map comes from the strokes, stored ADE20K-style (class i as value i + 1,
read with `reduce_zero_label`), so the files look like ADE20K's to every tool:

- 1: background (a class: the demo model learns where digits are not, so its pictures are clean);
- 2 .. 11: digits 0 .. 9 (class "0" .. "9");
- 0: the soft rim of a stroke, neither clearly ink nor ground, left unlabelled (ignored).

Scenes are written under a folder in the ADE20K layout (`images/{training,validation}/*.jpg`,
`annotations/{training,validation}/*.png`) with a `classes.json` naming the 11 classes,
palette and `reduce_zero_label`, so `twins.tasks.segment.data.open_segmentation` reads them as any
user's data. Training scenes use only the digits of the classifier demo's training split and
validation scenes only its validation digits (`twins.data.digits`). Scene i of a split is a
function of (seed, split, i) alone. Each scene's digits are also returned as instances (class,
box, mask), from which detection annotations can be written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from twins.data.digits import SPLIT_SEED, VAL_FRACTION
from twins.tasks.segment.ade20k import ADE20K_PALETTE
from twins.tasks.segment.data import CLASSES_FILE

CLASSES = ("background", *(str(d) for d in range(10)))
BACKGROUND_VALUE, UNLABELLED_VALUE = 1, 0
# Ink (the digit's 0..1 intensity after upscaling) at least INK is the digit; below RIM is
# background; between them the rim is left unlabelled.
INK, RIM = 0.5, 0.15
# `light_ink`: the ground scaled by DARKENED, the digits' colour drawn in LIGHT_INK per channel.
DARKENED, LIGHT_INK = 0.4, (170, 255)
MANIFEST = "digit_scenes.json"
# Digits per scene (lowest, highest) and a digit's side as fractions of the scene's.
DIGITS_PER_SCENE = (2, 4)
DIGIT_SIDE = (0.25, 0.5)
SPLITS = {"training": 0, "validation": 1}


@dataclass(frozen=True)
class SceneLayout:
    """How the scenes of a set are laid out, shared by the segmentation and detection scenes:
    the scene's side in pixels, the digits a scene holds (lowest, highest), a digit's side as
    fractions (lowest, highest) of the scene's, a grid `cell` in pixels (each digit centred in
    its own cell) or None (anywhere), and `light_ink` (every digit light on a darkened
    ground)."""

    size: int = 64
    count: tuple[int, int] = DIGITS_PER_SCENE
    side: tuple[float, float] = DIGIT_SIDE
    cell: int | None = None
    light_ink: bool = False

    def __post_init__(self) -> None:  # lists from JSON or YAML compare as the tuples they are
        object.__setattr__(self, "count", tuple(self.count))
        object.__setattr__(self, "side", tuple(self.side))


# Digits anywhere in 64 px scenes, 2 to 4 of them, dark or light.
DEFAULT_LAYOUT = SceneLayout()


@dataclass(frozen=True)
class DigitInstance:
    """One digit of a scene: its digit (0-9), its tight box (x0, y0, x1, y1; x1, y1 one past the
    last ink column and row) and its ink mask (H x W bool, the pixels labelled as the digit)."""

    digit: int
    box: tuple[int, int, int, int]
    mask: np.ndarray


@dataclass(frozen=True)
class DigitScene:
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W uint8, values as stored (see the module's docstring)
    instances: list[DigitInstance]


def make_scene(
    rng: np.random.Generator,
    digits: np.ndarray,
    targets: np.ndarray,
    layout: SceneLayout = DEFAULT_LAYOUT,
) -> DigitScene:
    """One scene of `layout.size` x `layout.size` from the 8 x 8 `digits` (0..16 grey levels)
    and their `targets`, drawn from `rng`: `layout.count` (lowest, highest) digits of a side
    between the fractions `layout.side` of the scene's, where they fit without overlapping, or
    with `layout.cell` each centred in a cell of a grid of `cell` px squares (at most one a
    cell); with `layout.light_ink` every digit is light on a ground darkened to 40%."""
    size, count, side, cell, light_ink = (
        layout.size, layout.count, layout.side, layout.cell, layout.light_ink
    )  # fmt: skip
    image = _background(rng, size) * (DARKENED if light_ink else 1.0)
    label = np.full((size, size), BACKGROUND_VALUE, dtype=np.uint8)
    taken = np.zeros((size, size), dtype=bool)
    instances = []
    smallest, largest = round(size * side[0]), round(size * side[1])
    wanted = int(rng.integers(count[0], count[1] + 1))
    cells = _cell_corners(rng, size, cell, wanted) if cell else [None] * wanted
    for corner in cells:
        for _attempt in range(20):  # a free place for this digit, or none
            edge = int(rng.integers(smallest, largest + 1))
            if corner is None:
                top, left = (int(v) for v in rng.integers(0, size - edge + 1, 2))
            else:
                top, left = (max(0, c + (cell - edge) // 2) for c in corner)
            if not taken[top : top + edge, left : left + edge].any():
                break
        else:
            continue
        pick = int(rng.integers(len(digits)))
        ink = _upscaled(digits[pick], edge)
        window = (slice(top, top + edge), slice(left, left + edge))
        ground = image[window].reshape(-1, 3).mean(0)
        colour = rng.uniform(*LIGHT_INK, 3) if light_ink else _contrasting(rng, ground)
        alpha = ink[..., None]
        image[window] = (image[window] * (1 - alpha) + colour * alpha).round()
        strokes = ink >= INK
        label[window][ink >= RIM] = UNLABELLED_VALUE
        label[window][strokes] = int(targets[pick]) + 2
        taken[window] = True
        mask = np.zeros((size, size), dtype=bool)
        mask[window] = strokes
        rows, cols = np.nonzero(mask)
        if len(rows):
            box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
            instances.append(DigitInstance(int(targets[pick]), box, mask))
    return DigitScene(image.astype(np.uint8), label, instances)


def _cell_corners(
    rng: np.random.Generator, size: int, cell: int, wanted: int
) -> list[tuple[int, int]]:
    """(top, left) of `wanted` distinct cells of the `cell` px grid over the scene, in random
    order (fewer where the grid has fewer cells)."""
    per_side = size // cell
    chosen = rng.permutation(per_side * per_side)[:wanted]
    return [(int(i) // per_side * cell, int(i) % per_side * cell) for i in chosen]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour blobs: a random 3 x 3 colour grid upscaled bicubically, plus light noise."""
    grid = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))
    noise = rng.normal(0, 6, (size, size, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.float64)


def _contrasting(rng: np.random.Generator, ground: np.ndarray) -> np.ndarray:
    """A random colour of clearly other brightness than `ground`: dark on a light ground,
    light on a dark one."""
    if ground @ np.array([0.299, 0.587, 0.114]) > 128:
        return rng.uniform(0, 90, 3)
    return rng.uniform(165, 255, 3)


def _upscaled(digit: np.ndarray, side: int) -> np.ndarray:
    """An 8 x 8 digit (0..16) as side x side ink in 0..1, bicubic."""
    gray = Image.fromarray(np.clip(digit * (255 / 16), 0, 255).astype(np.uint8))
    big = np.asarray(gray.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
    return big / 255


def split_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(8 x 8 images, digits) of the classifier demo's train and val splits, by folder name."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, val = train_test_split(
        indices, test_size=VAL_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return {
        "training": (digits.images[train], digits.target[train]),
        "validation": (digits.images[val], digits.target[val]),
    }


def write_digit_scenes(
    root: str | Path,
    train: int = 400,
    val: int = 100,
    layout: SceneLayout = DEFAULT_LAYOUT,
    seed: int = 0,
) -> dict[str, list[list[DigitInstance]]]:
    """Write `train` and `val` scenes of `layout` under `root` in the ADE20K layout with
    `classes.json` (unless a complete set of the same parameters is there) and return each
    split's instances, scene by scene (scene i is `images/<split>/<i:05d>.jpg`)."""
    root = Path(root)
    expected = {"train": train, "val": val, "size": layout.size, "seed": seed}
    if (layout.count, layout.side) != (DIGITS_PER_SCENE, DIGIT_SIDE):  # old manifests stay valid
        expected |= {"count": list(layout.count), "side": list(layout.side)}
    if layout.cell or layout.light_ink:
        expected |= {"cell": layout.cell, "light_ink": layout.light_ink}
    complete = _is_complete(root, expected)
    if not complete:
        (root / MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    instances: dict[str, list[list[DigitInstance]]] = {}
    for split, (digits, targets) in split_digits().items():
        scenes = train if split == "training" else val
        images, labels = root / "images" / split, root / "annotations" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        instances[split] = []
        for index in range(scenes):
            rng = np.random.default_rng([seed, SPLITS[split], index])
            scene = make_scene(rng, digits, targets, layout)
            instances[split].append(scene.instances)
            if not complete:
                Image.fromarray(scene.image).save(images / f"{index:05d}.jpg", quality=95)
                Image.fromarray(scene.label).save(labels / f"{index:05d}.png")
    if not complete:
        spec = {
            "classes": list(CLASSES),
            "palette": [list(c) for c in ADE20K_PALETTE[: len(CLASSES)]],
            "reduce_zero_label": True,
        }
        (root / CLASSES_FILE).write_text(json.dumps(spec) + "\n")
        # Written last: its presence means every file above is in place.
        (root / MANIFEST).write_text(json.dumps(expected, indent=2) + "\n")
    return instances


def _is_complete(root: Path, expected: dict) -> bool:
    try:
        return json.loads((root / MANIFEST).read_text()) == expected
    except (OSError, ValueError):
        return False
