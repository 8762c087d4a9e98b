"""`twins predict --out`: one row per image in JSONL, CSV or Parquet, written as predicted; an
interrupted run continued on the same file ends with the rows of an unbroken one; a file of
another model, or of an unknown format, is refused in one line; under torchrun the processes
share the images and the first joins their parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from factories import TINY_MODEL
from twins.cli.main import main
from twins.errors import TwinsError
from twins.inference import rows as row_files
from twins.inference.owner import sidecar
from twins.tasks.classify.predict import Predictor as ClassifyPredictor
from twins.tasks.predictor import stream_predictions
from twins.weights import StateDict, model_metadata, save_weights

FORMATS = [".jsonl", ".csv", ".parquet"]


def _classifier(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = twins.create_model("pcpvt_small", num_classes=3, **TINY_MODEL)
    metadata = model_metadata(model, ["red", "green", "blue"], {"image_size": 32, "crop_pct": 1.0})
    save_weights(StateDict(model.state_dict(), metadata), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _classifier(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(7):
        pixels = rng.integers(0, 255, (32 + index, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image{index}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _rows(out: Path) -> list[dict]:
    return sorted(row_files.read_rows(out), key=lambda row: row["image"])


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_image_is_one_row_and_a_broken_one_a_row_with_its_error(
    checkpoint, images, tmp_path, suffix
):
    out = tmp_path / f"predictions{suffix}"
    result = stream_predictions(checkpoint, [str(images)], out, topk=2, device="cpu")
    rows = _rows(out)
    assert [Path(row["image"]).name for row in rows] == ["broken.jpg"] + [
        f"image{index}.png" for index in range(7)
    ]
    assert result.images == 8 and result.written == 8 and len(result.failures) == 1
    broken, first = rows[0], rows[1]
    assert "not an image file" in broken["error"] and not broken.get("top")
    top = first["top"] if suffix == ".jsonl" else json.loads(first["top"])
    assert [entry["label"] for entry in top][0] in ("red", "green", "blue") and len(top) == 2
    # The same object as the --json entry of the image.
    run = twins.tasks.predict(checkpoint, [str(images / "image0.png")], topk=2, device="cpu")
    assert top == run.to_json()["predictions"][0]["top"]
    assert not row_files.parts_folder(out).exists() and sidecar(out).is_file()


class Interrupted(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("suffix", FORMATS)
def test_an_interrupted_run_continues_to_the_rows_of_an_unbroken_one(
    checkpoint, images, tmp_path, suffix, monkeypatch
):
    unbroken = tmp_path / f"unbroken{suffix}"
    stream_predictions(checkpoint, [str(images)], unbroken, batch_size=1, device="cpu")

    out = tmp_path / f"interrupted{suffix}"
    rows = ClassifyPredictor.rows

    def stopped_after_three(self, items):
        for count, row in enumerate(rows(self, items)):
            if count == 3:
                raise Interrupted  # Ctrl-C while the fourth image is predicted
            yield row

    monkeypatch.setattr(ClassifyPredictor, "rows", stopped_after_three)
    with pytest.raises(Interrupted):
        stream_predictions(checkpoint, [str(images)], out, batch_size=1, device="cpu")
    monkeypatch.undo()
    if suffix != ".parquet":  # a process killed in the middle of a line
        with open(out, "a", encoding="utf-8") as file:
            file.write('{"image": "half a ro')
    assert 0 < len(row_files.done_images(out)) < 8

    result = stream_predictions(checkpoint, [str(images)], out, batch_size=1, device="cpu")
    assert result.skipped == 3 and result.written == 5 and result.images == 8
    assert _rows(out) == _rows(unbroken)
    again = stream_predictions(checkpoint, [str(images)], out, batch_size=1, device="cpu")
    assert again.written == 0 and again.skipped == 8 and _rows(out) == _rows(unbroken)


def test_a_file_of_another_model_is_refused_unless_overwritten(checkpoint, images, tmp_path):
    out = tmp_path / "predictions.jsonl"
    stream_predictions(checkpoint, [str(images)], out, device="cpu")
    other = _classifier(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(TwinsError, match="another model") as caught:
        stream_predictions(other, [str(images)], out, device="cpu")
    assert "--overwrite" in str(caught.value) and "\n" not in str(caught.value)
    result = stream_predictions(other, [str(images)], out, device="cpu", overwrite=True)
    assert result.written == 8
    (tmp_path / "mine.csv").write_text("image,label\nx.png,cat\n")
    with pytest.raises(TwinsError, match="did not record its model"):
        stream_predictions(checkpoint, [str(images)], tmp_path / "mine.csv", device="cpu")


def test_an_unknown_extension_is_refused_in_one_line(checkpoint, images, tmp_path, capsys):
    code = main(
        ["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(tmp_path / "p.txt")]
    )
    error = capsys.readouterr().err
    assert code != 0 and error.count("\n") == 1
    assert ".jsonl, .csv, .parquet" in error and not (tmp_path / "p.txt").exists()


def test_object_store_inputs_without_out_are_refused_in_one_line(checkpoint, capsys):
    with pytest.raises(TwinsError, match="pass --out FILE"):
        twins.tasks.predict(checkpoint, ["s3://bucket/photos/"])
    assert main(["predict", "--checkpoint", str(checkpoint), "x.png", "--overwrite"]) != 0
    assert "give --out FILE too" in capsys.readouterr().err


def test_a_list_of_paths_and_an_object_store_prefix_stream_into_one_file(
    checkpoint, images, tmp_path, s3_prefix
):
    from twins import storage

    for index in (5, 6):
        name = f"image{index}.png"
        storage.write_bytes(storage.join(s3_prefix, "photos", name), (images / name).read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the first few\n{images / 'image0.png'}\n{images / 'image1.png'}\n\n")
    out = tmp_path / "predictions.jsonl"
    result = stream_predictions(
        checkpoint, [f"@{listing}", storage.join(s3_prefix, "photos")], out, device="cpu"
    )
    names = [row["image"] for row in _rows(out)]
    assert result.images == 4 and not result.failures
    assert names[:2] == [str(images / "image0.png"), str(images / "image1.png")]
    assert names[2:] == [storage.join(s3_prefix, "photos", f"image{i}.png") for i in (5, 6)]
    local = twins.Predictor(checkpoint, device="cpu")(images / "image5.png")
    assert _rows(out)[2]["top"] == local["top"]


@pytest.mark.slow
def test_torchrun_processes_share_the_images_and_join_their_parts(checkpoint, images, tmp_path):
    out = tmp_path / "predictions.parquet"
    single = tmp_path / "single.parquet"
    stream_predictions(checkpoint, [str(images)], single, device="cpu")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["-m", "twins", "predict", "--checkpoint", str(checkpoint), str(images)]
    command += ["--out", str(out), "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rows(out) == _rows(single) and not row_files.parts_folder(out).exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_the_parts_of_a_stopped_torchrun_are_joined_by_the_next_run(
    checkpoint, images, tmp_path, suffix
):
    unbroken = tmp_path / f"unbroken{suffix}"
    stream_predictions(checkpoint, [str(images)], unbroken, device="cpu")
    out = tmp_path / f"stopped{suffix}"
    # Process 1 of 2 wrote three rows into its part; the run stopped before joining it.
    sidecar(out).write_bytes(sidecar(unbroken).read_bytes())
    part = row_files.open_rows(out, row_files.columns_of(("top",)), rank=1, world_size=2)
    for row in row_files.read_rows(unbroken)[:3]:
        part.write(row)
    part.close()

    result = stream_predictions(checkpoint, [str(images)], out, device="cpu")
    assert result.skipped == 3 and result.written == 5 and result.images == 8
    assert _rows(out) == _rows(unbroken) and not row_files.parts_folder(out).exists()
