"""`twins eval` of a segmenter: mmseg's metrics of a trained checkpoint on its validation set,
per class by name, the same as the fit loop's last evaluation; test-time augmentation."""

from __future__ import annotations

import json

import pytest

from twins.cli.main import main
from twins.train.metrics import read_metrics


def _eval(capsys, run, *extra):
    args = ["eval", "-c", str(run / "config.yaml"), "--checkpoint"]
    args += [str(run / "checkpoints" / "last.pt"), "--data", str(run.parent / "data"), *extra]
    assert main(args) == 0
    return capsys.readouterr().out


def test_eval_json_gives_the_fit_loops_metrics_and_each_class(tiny_segmenter_run, capsys):
    result = json.loads(_eval(capsys, tiny_segmenter_run, "--json"))
    last = [r for r in read_metrics(tiny_segmenter_run / "metrics.jsonl") if r["kind"] == "eval"]
    assert result["images"] == 3 and result["tta"] is False
    assert result["arch"] == "semantic_fpn_svt_small" and result["left_out"] == ""
    for key in ("mIoU", "mAcc", "aAcc"):
        assert result[key] == pytest.approx(last[-1][f"val_{key}"], abs=1e-9)
    names = ["background", *"0123456789"]
    assert {f"IoU.{name}" for name in names} <= result.keys()
    ious = [result[f"IoU.{name}"] for name in names]
    defined = [iou for iou in ious if iou is not None]
    assert result["mIoU"] == pytest.approx(sum(defined) / len(defined))
    # a class in neither prediction nor label is null (JSON has no NaN), left out of the mean
    accs = [result[f"Acc.{name}"] for name in names]
    assert all(a is None or 0 <= a <= 100 for a in accs)


def test_eval_text_and_tta(tiny_segmenter_run, capsys):
    out = _eval(capsys, tiny_segmenter_run)
    assert "mIoU" in out and "(3 images, whole-image test)" in out
    # the smallest of the 6 scales (0.5 x img_scale) must give the backbone 32 px at least
    assert main(["eval", "-c", str(tiny_segmenter_run / "config.yaml"), "--checkpoint",
                 str(tiny_segmenter_run / "checkpoints" / "last.pt"), "tta=true"]) == 2  # fmt: skip
    assert "raise img_scale" in capsys.readouterr().err
    tta = json.loads(_eval(capsys, tiny_segmenter_run, "--json", "tta=true", "img_scale=[128,64]"))
    plain = json.loads(_eval(capsys, tiny_segmenter_run, "--json", "img_scale=[128,64]"))
    assert tta["tta"] is True and tta["images"] == 3
    assert 0 <= tta["mIoU"] <= 100 and tta["mIoU"] != plain["mIoU"]
