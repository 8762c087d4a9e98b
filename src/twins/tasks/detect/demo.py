"""`twins demo --task detect`: a small Twins detector trained on scenes of the built-in digits.

Scenes of scikit-learn's handwritten digits (`twins.tasks.scenes`: 2 to 4 digits of 32 px,
each centred in its own cell of the 64 px scene's 2 x 2 grid, light on a darkened smooth colour
background; training scenes from the classifier demo's training digits, validation scenes from
its validation digits) are written in the COCO layout under `DIR/data`
(`annotations/instances_{train,val}.json` with boxes and RLE masks, images `train/` and `val/`,
named by image id as COCO names them), the recipe `configs/demo_detect.yaml` is resolved and
written to `DIR/config.yaml`, and `twins.train.fit` trains it into `DIR`: the code `twins train`
runs, so `twins train -c DIR/config.yaml --data DIR/data` gives the same weights. The final
weights then detect the digits of some validation scenes (`twins.tasks.detect.predict`), drawn
into one picture, and the run's box (and mask) AP on the held-out scenes is printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from twins.atomic import write_text
from twins.tasks.demo_common import duration, load_demo_recipe
from twins.tasks.detect.data import CategoryMap
from twins.tasks.detect.predict import MIN_SCORE, draw_detections, predict_detections, write_picture
from twins.tasks.detect.task import DetectTask
from twins.tasks.scenes import (
    DEFAULT_LAYOUT,
    DIGITS_PER_SCENE,
    DigitInstance,
    SceneLayout,
    make_scene,
    split_digits,
)
from twins.train import fit
from twins.train.threads import threads_set
from twins.weights import load_weights

RECIPE = Path(__file__).parents[2] / "configs" / "demo_detect.yaml"
SPLITS = {"train": "training", "val": "validation"}
MANIFEST = "scenes.json"
# Scene counts, side, seed, digits per scene, digit side (as fractions of the scene's), grid
# cell (px) and light ink, as `make_scene` takes them; recipe keys of their own would be dead
# keys for `twins train`. Each digit centred in a cell of a 2 x 2 grid, all light on a dark
# ground: the small backbone, not shift-equivariant at its coarse stages, tells digits apart
# within minutes only so (configs/demo_detect.yaml, Why), and the 32 px digits centred at 16
# and 48 px meet the smallest anchors (32 px at stride 8) centre on centre.
SCENES = {"train": 1600, "val": 50, "seed": 0}
LAYOUT = SceneLayout(size=64, count=DIGITS_PER_SCENE, side=(0.5, 0.5), cell=32, light_ink=True)
PICTURE_SCENES = 8
PICTURE_SCALE = 4  # 64 px scenes drawn at 256 px, so that names and scores can be read
COMPUTE_THREADS = 1


def category_id(digit: int) -> int:
    """The COCO category id of a digit (ids start at 1, as COCO's)."""
    return digit + 1


def coco_annotation(
    digit: DigitInstance, annotation_id: int, image_id: int, category: int
) -> dict[str, Any]:
    """A digit of a scene as a COCO annotation of `category`: its box (x, y, w, h) and RLE
    mask."""
    x0, y0, x1, y1 = digit.box
    rle = mask_utils.encode(np.asfortranarray(digit.mask.astype(np.uint8)))
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": int(digit.mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
    }


def write_detection_scenes(
    root: str | Path, train: int, val: int, layout: SceneLayout = DEFAULT_LAYOUT, seed: int = 0
) -> Path:
    """Digit scenes of `layout` in the COCO layout under `root` (kept when a complete set of
    the same parameters is there). Scene i of a split is image id i + 1, file `<id:06d>.png`."""
    root = Path(root)
    size = layout.size
    expected = {"train": train, "val": val, "size": size, "seed": seed}
    expected |= {"count": list(layout.count), "side": list(layout.side)}
    expected |= {"cell": layout.cell, "light_ink": layout.light_ink}
    try:
        if json.loads((root / MANIFEST).read_text()) == expected:
            return root
    except (OSError, ValueError):
        pass
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    digits = split_digits()
    categories = [
        {"id": category_id(d), "name": str(d), "supercategory": "digit"} for d in range(10)
    ]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, scenes in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(scenes):
            rng = np.random.default_rng([seed, list(SPLITS).index(split), index])
            scene = make_scene(rng, *digits[SPLITS[split]], layout)
            image_id, name = index + 1, f"{index + 1:06d}.png"
            Image.fromarray(scene.image).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            for digit in scene.instances:
                category = category_id(digit.digit)
                annotations.append(coco_annotation(digit, len(annotations) + 1, image_id, category))
        content = {"images": images, "annotations": annotations, "categories": categories}
        write_text(root / "annotations" / f"instances_{split}.json", json.dumps(content))
    write_text(root / MANIFEST, json.dumps(expected, indent=2) + "\n")  # last: all is in place
    return root


def run_detect_demo(
    output: str | Path = "runs/demo-detect",
    overrides: list[str] | tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    scenes: dict[str, int] | None = None,
    layout: SceneLayout = LAYOUT,
) -> dict[str, Any]:
    """Write the scenes, train, evaluate, draw; returns the numbers and paths. `scenes`
    changes the scene counts or seed (`SCENES`' keys), `layout` the scenes' layout."""
    start, cpu_start = time.perf_counter(), time.process_time()
    output = Path(output)
    data = output / "data"
    spec = {**SCENES, **(scenes or {})}
    config = load_demo_recipe(RECIPE, overrides, data, output)
    write_detection_scenes(data, spec["train"], spec["val"], layout, spec["seed"])
    say(
        f"demo: {data} holds {spec['train']} training and {spec['val']} validation scenes of "
        f"digits in the COCO layout; training {config.arch} now"
    )
    with threads_set(COMPUTE_THREADS):
        result = fit(config, DetectTask())
        checkpoint = output / "checkpoints" / "last.pt"
        picture = output / "predictions.png"
        draw_val_predictions(checkpoint, sorted((data / "val").glob("*.png")), picture)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    figures = f"box AP {result['val_bbox_AP']:.1f}%, AP50 {result['val_bbox_AP50']:.1f}%"
    if "val_segm_AP" in result:
        figures += f", mask AP {result['val_segm_AP']:.1f}%, AP50 {result['val_segm_AP50']:.1f}%"
    say(
        f"demo done in {duration(seconds)} ({duration(cpu_seconds)} of CPU): {figures} on "
        f"{result['val_images']} held-out scenes"
    )
    say(f"  data         {data}")
    say(f"  config       {output / 'config.yaml'}")
    say(f"  weights      {checkpoint}")
    say(f"  metrics      {output / 'metrics.jsonl'}, curves {output / 'curves.png'}")
    say(f"  predictions  {picture}")
    say(
        f"  evaluate     twins eval -c {output / 'config.yaml'} --checkpoint {checkpoint} "
        f"--data {data} --json"
    )
    keys = [k for k in result if k.startswith(("val_bbox_", "val_segm_"))]
    return {
        **{k[len("val_") :]: result[k] for k in keys},
        "images": result["val_images"],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "output": str(output),
        "checkpoint": str(checkpoint),
        "predictions_png": str(picture),
    }


def draw_val_predictions(checkpoint: Path, images: list[Path], path: Path) -> None:
    """The first PICTURE_SCENES validation scenes with the final weights' detections scoring
    MIN_SCORE or more, enlarged PICTURE_SCALE times so that names and scores can be read, in
    two rows."""
    run = predict_detections(load_weights(checkpoint), images[:PICTURE_SCENES])
    categories = CategoryMap([{"id": i, "name": n} for i, n in run.names.items()])
    tiles = []
    for prediction in run.predictions:
        pixels = torch.from_numpy(np.array(Image.open(prediction.image).convert("RGB")))
        big = pixels.repeat_interleave(PICTURE_SCALE, 0).repeat_interleave(PICTURE_SCALE, 1)
        tiles.append(
            draw_detections(big.permute(2, 0, 1), _enlarged(prediction.results), categories)
        )
    if not tiles:
        return
    columns = (len(tiles) + 1) // 2
    height, width = tiles[0].shape[-2:]
    sheet = torch.full((3, 2 * height, columns * width), 255, dtype=torch.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        sheet[:, row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
    write_picture(sheet, path)


def _enlarged(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result objects of a scene enlarged PICTURE_SCALE times (those drawn only)."""
    enlarged = []
    for result in results:
        if result["score"] < MIN_SCORE:
            continue
        result = {**result, "bbox": [v * PICTURE_SCALE for v in result["bbox"]]}
        if "segmentation" in result:
            mask = mask_utils.decode(result["segmentation"])
            big = np.kron(mask, np.ones((PICTURE_SCALE, PICTURE_SCALE), dtype=np.uint8))
            result["segmentation"] = mask_utils.encode(np.asfortranarray(big))
        enlarged.append(result)
    return enlarged
