"""The curves PNG of a run: training loss, learning rate and validation top-1, redrawn from the
metrics records at the end of each epoch. matplotlib's object interface renders with Agg
straight to the file: no display, no pyplot (whose import alone costs most of a second)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twins.atomic import atomic_path


def draw_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    from matplotlib.figure import Figure

    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "epoch" and "val_top1" in r]
    figure = Figure(figsize=(13, 3.6))
    axes = figure.subplots(1, 3)
    panels = (
        (axes[0], steps, "step", "train_loss", "training loss"),
        (axes[1], steps, "step", "lr", "learning rate"),
        (axes[2], evals, "epoch", "val_top1", "val top-1 (%)"),
    )
    for ax, rows, x, y, title in panels:
        ax.plot([r[x] for r in rows], [r[y] for r in rows], marker="o" if x == "epoch" else None)
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.9, wspace=0.22)
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90)
