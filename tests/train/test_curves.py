"""The curves PNG shows each task's own score and the parts of its loss."""

from __future__ import annotations

from twins.train.curves import curves_figure, draw_curves

STEPS = [
    {"kind": "step", "epoch": 1, "step": s, "train_loss": 2.0 / s, "lr": 1e-3}
    | {"train_decode.loss_seg": 1.5 / s, "train_aux.loss_seg": 0.5 / s}
    for s in (1, 2, 3, 4)
]
EVALS = [
    {"kind": "eval", "epoch": 1, "step": 2, "val_mIoU": 10.0, "val_mAcc": 20.0},
    {"kind": "eval", "epoch": 2, "step": 4, "val_mIoU": 30.0, "val_mAcc": 40.0},
]


def _plotted(figure) -> list[tuple[str, list[list]]]:
    return [
        (ax.get_title(), [list(line.get_xdata()) + list(line.get_ydata()) for line in ax.lines])
        for ax in figure.axes
    ]


def test_a_segmentation_run_plots_its_miou_by_iteration_and_each_head_loss():
    panels = _plotted(curves_figure(STEPS + EVALS, "mIoU", "mIoU"))
    (loss_title, losses), _, (score_title, scores) = panels
    assert loss_title == "training loss" and len(losses) == 3  # total, aux, decode
    assert score_title == "val mIoU (%)" and scores == [[2, 4, 10.0, 30.0]]


def test_a_classifier_plots_its_top1_by_epoch(tmp_path):
    epochs = [
        {"kind": "epoch", "epoch": e, "step": 2 * e, "train_loss": 1.0, "lr": 1e-3, "val_top1": t}
        for e, t in ((1, 50.0), (2, 75.0))
    ]
    (_, losses), _, (title, scores) = _plotted(curves_figure(STEPS[:2] + epochs, "top1", "top-1"))
    assert len(losses) == 3 and title == "val top-1 (%)" and scores == [[1, 2, 50.0, 75.0]]
    draw_curves(STEPS + EVALS, tmp_path / "curves.png", "mIoU", "mIoU")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
