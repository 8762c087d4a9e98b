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


def _photo(path, size=(48, 48), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _predict(run, *inputs, output):
    checkpoint = run / "checkpoints" / "last.pt"
    args = ["predict", "--checkpoint", str(checkpoint), *map(str, inputs)]
    return main([*args, "--output", str(output), "--json"])


def test_same_named_images_of_two_folders_keep_their_folders(tiny_segmenter_run, tmp_path, capsys):
    first, second = _photo(tmp_path / "a" / "x.jpg", seed=1), _photo(tmp_path / "b" / "x.jpg")
    out = tmp_path / "out"
    assert _predict(tiny_segmenter_run, first, second, output=out) == 0
    result = json.loads(capsys.readouterr().out)
    written = [(p["label_map"], p["overlay"]) for p in result["predictions"]]
    assert written == [
        (str(out / "a" / "x.png"), str(out / "a" / "x_overlay.png")),
        (str(out / "b" / "x.png"), str(out / "b" / "x_overlay.png")),
    ]
    overlays = [np.asarray(Image.open(overlay)) for _, overlay in written]
    assert not np.array_equal(*overlays)  # each image its own files


def test_a_folder_keeps_the_paths_inside_it(tiny_segmenter_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "x.jpg"), _photo(photos / "2024" / "y.jpg"), _photo(photos / "2024" / "x.jpg")
    out = tmp_path / "out"
    assert _predict(tiny_segmenter_run, photos, output=out) == 0
    labels = sorted(p["label_map"] for p in json.loads(capsys.readouterr().out)["predictions"])
    assert labels == [str(out / "2024" / "x.png"), str(out / "2024" / "y.png"), str(out / "x.png")]


def test_an_output_onto_an_input_is_refused_before_anything_is_written(
    tiny_segmenter_run, tmp_path, capsys
):
    photos = tmp_path / "photos"
    inputs = [_photo(photos / "x.jpg"), _photo(photos / "y.png", seed=2)]
    before = {path: path.read_bytes() for path in inputs}
    assert _predict(tiny_segmenter_run, photos, output=photos) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "would overwrite the input image" in error
    assert str(photos / "y.png") in error
    assert sorted(photos.iterdir()) == sorted(inputs)
    assert {path: path.read_bytes() for path in inputs} == before


@pytest.mark.parametrize("into_input_folder", [False, True])
def test_an_image_named_like_an_overlay_is_refused(
    tiny_segmenter_run, tmp_path, capsys, into_input_folder
):
    photos = tmp_path / "photos"
    image, named = _photo(photos / "x.jpg"), _photo(photos / "x_overlay.png", seed=3)
    out = photos if into_input_folder else tmp_path / "out"
    before = named.read_bytes()
    assert _predict(tiny_segmenter_run, image, named, output=out) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(named) in error and str(image) in error
    assert named.read_bytes() == before and not (tmp_path / "out").exists()


def test_predictions_beside_their_images_where_nothing_is_overwritten(
    tiny_segmenter_run, tmp_path, capsys
):
    photos = tmp_path / "photos"
    image = _photo(photos / "x.jpg")
    before = image.read_bytes()
    assert _predict(tiny_segmenter_run, image, output=photos) == 0
    assert image.read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["x.jpg", "x.png", "x_overlay.png"]


def test_extreme_aspect_ratios_are_predicted(tiny_segmenter_run, tmp_path, capsys):
    images = [
        _photo(tmp_path / "wide.png", size=(2000, 1)),
        _photo(tmp_path / "tall.png", size=(1, 2000)),
        _photo(tmp_path / "dot.png", size=(1, 1)),
        _photo(tmp_path / "plain.jpg"),
    ]
    out = tmp_path / "out"
    assert _predict(tiny_segmenter_run, *images, output=out) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["failures"] == [] and len(result["predictions"]) == 4
    assert Image.open(out / "wide.png").size == (2000, 1)
    assert Image.open(out / "tall_overlay.png").size == (1, 2000)
