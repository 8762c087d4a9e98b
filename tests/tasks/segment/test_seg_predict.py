"""`twins predict` of a segmenter: label PNGs in the data set's values and colours, overlays,
and the mIoU of the written label maps equal to the one `twins eval` prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from twins.cli.main import main
from twins.tasks.segment.data import decode_label, open_segmentation, reduce_zero_label
from twins.tasks.segment.metrics import SegmentationMetrics


@pytest.fixture(scope="module")
def predicted(tiny_segmenter_run, tmp_path_factory):
    """(the predict command line for the validation images, its output folder)."""
    output = tmp_path_factory.mktemp("predicted")
    images = tiny_segmenter_run.parent / "data" / "images" / "validation"
    checkpoint = tiny_segmenter_run / "checkpoints" / "last.pt"
    args = ["predict", "--checkpoint", str(checkpoint), str(images), "--output", str(output)]
    return args, output


def _run(predicted, capsys):
    args, output = predicted
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out), output


def test_the_miou_of_the_written_label_maps_is_the_one_eval_prints(
    tiny_segmenter_run, predicted, capsys
):
    result, output = _run(predicted, capsys)
    data = tiny_segmenter_run.parent / "data"
    truth = open_segmentation(data, "validation")  # reduced as the data set says (ADE20K style)
    metrics = SegmentationMetrics(len(truth.classes))
    for index in range(len(truth)):
        label = truth[index][1]
        written = decode_label((output / f"{index:05d}.png").read_bytes())
        metrics.update(reduce_zero_label(written).long(), label.long())
    args = ["eval", "-c", str(tiny_segmenter_run / "config.yaml"), "--json"]
    args += ["--checkpoint", str(tiny_segmenter_run / "checkpoints" / "last.pt")]
    assert main([*args, "--data", str(data)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert metrics.compute()["mIoU"] == pytest.approx(evaluated["mIoU"], abs=1e-9)
    assert len(result["predictions"]) == evaluated["images"] == 3


def test_label_pngs_hold_the_data_sets_values_and_palette(tiny_segmenter_run, predicted, capsys):
    result, output = _run(predicted, capsys)
    spec = json.loads((tiny_segmenter_run.parent / "data" / "classes.json").read_text())
    assert spec["reduce_zero_label"] is True  # digit scenes store class i as i + 1
    for item in result["predictions"]:
        png = Image.open(item["label_map"])
        assert png.mode == "P" and item["label_map"] == str(output / f"{png_stem(item)}.png")
        values = np.unique(np.array(png))
        assert values.min() >= 1 and values.max() <= len(spec["classes"])  # 0 unused
        assert item["classes"] == [spec["classes"][v - 1] for v in values]
        palette = np.array(png.getpalette()[: 3 * (len(spec["classes"]) + 1)]).reshape(-1, 3)
        assert palette[1:].tolist() == spec["palette"] and palette[0].tolist() == [0, 0, 0]
        overlay = Image.open(item["overlay"])
        assert overlay.mode == "RGB" and overlay.size == png.size
        assert item["overlay"] == str(output / f"{png_stem(item)}_overlay.png")


def png_stem(item):
    return item["image"].rsplit("/", 1)[-1].rsplit(".", 1)[0]


def test_a_segmenter_needs_an_output_folder(predicted, capsys):
    args, _ = predicted
    assert main(args[:-2]) == 2
    assert "--output" in capsys.readouterr().err
