"""`twins demo --task segment`: a small Twins + Semantic FPN on scenes of handwritten digits.

Scenes of scikit-learn's digits (`twins.tasks.scenes`: 3-4 light digits, each in its
own cell of a 2 x 2 grid, on a dark smooth ground, labelled from their strokes) are written once
in the ADE20K layout under `DIR/data`, then trained on with the recipe
`configs/demo_segment.yaml` through `twins.train.fit`, the code `twins train` runs, so
`twins train -c DIR/config.yaml --data DIR/data` trains the same weights.
Afterwards the final weights label the validation scenes: a picture of some of them beside
their truth, and the final val mIoU with where everything is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twins.atomic import atomic_path
from twins.errors import TwinsError
from twins.tasks.demo_common import duration, load_demo_recipe
from twins.tasks.head import named_model_from_weights
from twins.tasks.scenes import SceneLayout, write_digit_scenes
from twins.tasks.segment.data import open_segmentation
from twins.tasks.segment.evaluate import eval_transform
from twins.tasks.segment.heads import HEADS
from twins.tasks.segment.metrics import predict_labels
from twins.tasks.segment.task import SegmentTask
from twins.train import fit
from twins.train.threads import threads_set
from twins.weights import load_weights

RECIPE = Path(__file__).parents[2] / "configs" / "demo_segment.yaml"
# Scenes written for the recipe; their side is the short side of its img_scale.
TRAIN_SCENES, VAL_SCENES = 1000, 200
# 3-4 digits of 32 px (the classifier demo's size), each in its own cell of the scene's 2 x 2
# grid, light on a darkened ground. A patch-merging transformer is not shift-equivariant at its
# last stage's 32 px: digits placed anywhere, or either dark or light, take several times the
# demo's 3 minutes to tell apart (configs/demo_segment.yaml, Why).
SCENE = SceneLayout(count=(3, 4), side=(0.5, 0.5), light_ink=True)
SHOWN_SCENES = 6
COMPUTE_THREADS = 1  # as the classifier demo: one compute thread beside one data worker


def run_segment_demo(
    output: str | Path = "runs/demo-segment",
    overrides: list[str] | tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    *,
    train_scenes: int = TRAIN_SCENES,
    val_scenes: int = VAL_SCENES,
) -> dict[str, Any]:
    """Write the scenes, train, draw predictions; returns the numbers and paths."""

    start = time.perf_counter()
    output = Path(output)
    data = output / "data"
    config = load_demo_recipe(RECIPE, overrides, data, output)
    size = min(config.img_scale)
    write_digit_scenes(data, train_scenes, val_scenes, replace(SCENE, size=size, cell=size // 2))
    say(
        f"demo: {data} holds {train_scenes} training and {val_scenes} validation scenes of "
        "handwritten digits in the ADE20K layout; training now"
    )
    with threads_set(COMPUTE_THREADS):
        result = fit(config, SegmentTask())
        checkpoint = output / "checkpoints" / "last.pt"
        picture = output / "predictions.png"
        draw_predictions(config, checkpoint, picture)

    seconds = time.perf_counter() - start
    say(
        f"demo done in {duration(seconds)}: final val mIoU {result['val_mIoU']:.2f}% "
        f"(mAcc {result['val_mAcc']:.2f}%, aAcc {result['val_aAcc']:.2f}%) on "
        f"{result['val_images']} scenes after {config.max_iters} iterations"
    )
    say(f"  data         {data}  (ADE20K layout, classes.json)")
    say(
        f"  weights      {checkpoint} (final), {checkpoint.with_name('best.pt')} (best val mIoU "
        f"{result['best_mIoU']:.2f}%)"
    )
    say(
        f"  metrics      {output / 'metrics.jsonl'}, curves {output / 'curves.png'}, "
        f"TensorBoard: tensorboard --logdir {output / 'tensorboard'}"
    )
    say(f"  predictions  {picture}  (scene, truth, prediction)")
    say(f"  again        twins train -c {output / 'config.yaml'} --data {data} --output DIR")
    return {
        "val_mIoU": result["val_mIoU"],
        "val_mAcc": result["val_mAcc"],
        "val_aAcc": result["val_aAcc"],
        "best_mIoU": result["best_mIoU"],
        "val_images": result["val_images"],
        "seconds": seconds,
        "output": str(output),
        "checkpoint": str(checkpoint),
        "predictions_png": str(picture),
    }


def draw_predictions(config: Any, checkpoint: Path, path: Path, count: int = SHOWN_SCENES) -> None:
    """The first `count` validation scenes in rows: the scene, its truth, the checkpoint's
    prediction, the labels coloured with the data set's palette (ignored pixels black)."""
    from matplotlib.figure import Figure  # no pyplot: renders to the file, needs no display

    model = named_model_from_weights(HEADS, load_weights(checkpoint)).eval()
    val_set = open_segmentation(config.data_url, "validation")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(val_set.class_list.palette)] = val_set.class_list.palette
    transform = eval_transform(config)
    rows = min(count, len(val_set))
    figure = Figure(figsize=(3 * 1.6, rows * 1.6))
    axes = figure.subplots(rows, 3, squeeze=False)
    for row, index in enumerate(range(rows)):
        sample = val_set[index]
        if sample is None:
            raise TwinsError(f"{val_set.file_name(index)} is unreadable: delete {config.data_url}")
        image, label = sample
        with torch.inference_mode():
            logits = model(transform.image(image)[None])["out"]
        prediction = predict_labels(logits, label.shape[-2:])[0]
        truth = label.as_subclass(torch.Tensor).long()
        pictures = (image.permute(1, 2, 0), palette[truth.numpy()], palette[prediction.numpy()])
        for column, (ax, picture) in enumerate(zip(axes[row], pictures, strict=True)):
            ax.imshow(np.asarray(picture), interpolation="nearest")
            ax.axis("off")
            if row == 0:
                ax.set_title(("scene", "truth", "prediction")[column], fontsize=10)
    figure.suptitle("val scenes: classes in the palette of classes.json", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
