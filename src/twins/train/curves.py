"""The curves PNG of a run: the training loss (and its parts, a dense task's heads), the
learning rate and the task's validation score (top-1, mIoU, box AP), redrawn from the metrics
records at the end of each epoch. matplotlib's object interface renders with Agg straight to
the file: no display, no pyplot (whose import alone costs most of a second)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twins.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def curves_figure(records: list[dict[str, Any]], score: str, score_label: str) -> Figure:
    """Three panels: training losses by step, learning rate by step, val `score` (in %) by
    epoch, or by step where the run evaluates by iteration."""
    from matplotlib.figure import Figure

    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") in ("epoch", "eval") and f"val_{score}" in r]
    x_eval = "step" if any(r["kind"] == "eval" for r in evals) else "epoch"
    parts = sorted({k for r in steps for k in r if k.startswith("train_") and k != "train_loss"})
    figure = Figure(figsize=(13, 3.6))
    losses, rates, scores = figure.subplots(1, 3)
    for key in ("train_loss", *parts):
        rows = [r for r in steps if r.get(key) is not None]
        label = "total" if key == "train_loss" else key.removeprefix("train_")
        losses.plot([r["step"] for r in rows], [r[key] for r in rows], label=label)
    if parts:
        losses.legend(fontsize=7)
    rates.plot([r["step"] for r in steps], [r["lr"] for r in steps])
    rows = [r for r in evals if r[f"val_{score}"] is not None]
    scores.plot([r[x_eval] for r in rows], [r[f"val_{score}"] for r in rows], marker="o")
    titles = ("training loss", "learning rate", f"val {score_label} (%)")
    for ax, title, x in zip((losses, rates, scores), titles, ("step", "step", x_eval), strict=True):
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.9, wspace=0.22)
    return figure


def draw_curves(
    records: list[dict[str, Any]],
    path: str | Path,
    score: str,
    score_label: str,
) -> None:
    path = Path(path)
    with atomic_path(path) as temporary:
        curves_figure(records, score, score_label).savefig(temporary, dpi=90)
