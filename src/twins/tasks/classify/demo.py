"""`twins demo`: train a small Twins-PCPVT on the built-in handwritten digits, end to end.

The digits that ship with scikit-learn are written once as an ImageFolder under the output
folder, then trained on with the recipe `configs/demo.yaml` through `twins.train.fit`, the very
code `twins train` runs on a user's own data. Afterwards the final weights label the validation
images: a PNG grid of some of them, a text line, and the final val top-1 with where everything is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from twins.data import build_loader, write_digits_imagefolder
from twins.errors import TwinsError
from twins.models.from_weights import model_from_weights
from twins.tasks.classify.data import build_datasets
from twins.tasks.classify.task import ClassifyTask
from twins.tasks.demo_common import duration, load_demo_recipe
from twins.train import fit
from twins.train.threads import threads_set
from twins.weights import load_weights

# configs/ ships inside the package (twins/configs), so an installed package finds it too.
RECIPE = Path(__file__).parents[2] / "configs" / "demo.yaml"
# The demo's model is small: one compute thread plus one data worker keep two cores busy, while
# two compute threads on two cores that other work shares wait on each other (10x slower here).
COMPUTE_THREADS = 1
GRID_CELLS = 24


def run_demo(
    output: str | Path = "runs/demo",
    overrides: list[str] | tuple[str, ...] = (),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the digits, train, evaluate, draw predictions; returns the numbers and paths."""
    start = time.perf_counter()
    output = Path(output)
    data = output / "digits"
    config = load_demo_recipe(RECIPE, overrides, data, output)
    write_digits_imagefolder(data)
    say(f"demo: {data} holds scikit-learn's handwritten digits as class folders; training now")
    with threads_set(COMPUTE_THREADS):
        result = fit(config, ClassifyTask())
        checkpoint = output / "checkpoints" / "last.pt"
        paths, labels, predictions = predict_val(config, checkpoint)
    right = sum(int(p == t) for p, t in zip(predictions, labels, strict=True))
    grid = output / "predictions.png"
    cells = _pick_cells(labels, predictions)
    draw_predictions([(paths[i], labels[i], predictions[i]) for i in cells], grid)

    seconds = time.perf_counter() - start
    shown = " ".join(f"{labels[i]}→{predictions[i]}" for i in cells[:12])
    wrong = len(labels) - right
    say(f"val digits, true→predicted: {shown}  ({wrong} of {len(labels)} val images wrong)")
    say(
        f"demo done in {duration(seconds)}: final val top-1 {result['val_top1']:.2f}% "
        f"({right} of {len(labels)} right) after {result['epoch']} epochs"
    )
    train_images = sum(1 for _ in (data / "train").glob("*/*.png"))
    say(f"  data         {data}  ({train_images} train, {len(labels)} val images)")
    say(
        f"  weights      {checkpoint} (final), {checkpoint.with_name('best.pt')} (best val top-1 "
        f"{result['best_top1']:.2f}%)"
    )
    say(
        f"  metrics      {output / 'metrics.jsonl'}, curves {output / 'curves.png'}, "
        f"TensorBoard: tensorboard --logdir {output / 'tensorboard'}"
    )
    say(f"  predictions  {grid}")
    say(f"  evaluate     twins eval -c configs/demo.yaml --checkpoint {checkpoint} --data {data}")
    return {
        "val_top1": result["val_top1"],
        "best_top1": result["best_top1"],
        "val_right": right,
        "val_images": len(labels),
        "epochs": result["epoch"],
        "seconds": seconds,
        "output": str(output),
        "checkpoint": str(checkpoint),
        "predictions_png": str(grid),
    }


def predict_val(config: Any, checkpoint: Path) -> tuple[list[str], list[int], list[int]]:
    """(file, true class, predicted class) of every validation image, by the checkpoint."""
    model = model_from_weights(load_weights(checkpoint))
    _, val_set, _ = build_datasets(config)
    predictions: list[int] = []
    with torch.inference_mode():
        for images, _ in build_loader(val_set, config, train=False):
            predictions += model(images).argmax(dim=1).tolist()
    if len(predictions) != len(val_set):
        raise TwinsError(f"{val_set.root} holds unreadable images: delete it to rewrite the digits")
    paths = [path for path, _ in val_set.samples]
    labels = [label for _, label in val_set.samples]
    return paths, labels, predictions


def _pick_cells(labels: list[int], predictions: list[int]) -> list[int]:
    """Indices to show: the mistakes first (a third of the grid at most), then each class in turn."""
    mistakes = [i for i, (t, p) in enumerate(zip(labels, predictions, strict=True)) if t != p]
    cells = mistakes[: GRID_CELLS // 3]
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if index not in cells:
            by_class.setdefault(label, []).append(index)
    rank = 0
    while len(cells) < GRID_CELLS and any(rank < len(v) for v in by_class.values()):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(cells) < GRID_CELLS:
                cells.append(by_class[label][rank])
        rank += 1
    return cells


def draw_predictions(items: list[tuple[str, int, int]], path: Path) -> None:
    """A grid of (image file, true class, predicted class): green when right, red when wrong."""
    from matplotlib.figure import Figure  # no pyplot: renders to the file, needs no display
    from PIL import Image

    columns = 6
    rows = max(1, -(-len(items) // columns))
    figure = Figure(figsize=(columns * 1.3, rows * 1.5))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (file, label, prediction) in zip(axes.flat, items, strict=False):
        with Image.open(file) as image:
            ax.imshow(image.convert("L"), cmap="gray", vmin=0, vmax=255)
        right = label == prediction
        title = f"{prediction}" if right else f"{prediction} (true {label})"
        ax.set_title(title, color="green" if right else "red", fontsize=10)
    figure.suptitle("val digits: predicted class (green right, red wrong)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
