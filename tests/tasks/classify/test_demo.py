"""The demo: the digits ImageFolder writer, a very short demo run, and (slow) the full demo."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import twins
from twins.cli.main import main
from twins.data import write_digits_imagefolder
from twins.tasks.classify.demo import RECIPE, run_demo


def _counts(root: Path, split: str) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.png"))) for d in sorted((root / split).iterdir())}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digits_imagefolder(tmp_path_factory.mktemp("demo") / "digits")


def test_digits_are_all_written_as_32px_pngs(digits):
    train, val = _counts(digits, "train"), _counts(digits, "val")
    assert list(train) == list(val) == [str(d) for d in range(10)]
    assert sum(train.values()) == 1437 and sum(val.values()) == 360
    with Image.open(next((digits / "val" / "3").iterdir())) as image:
        assert image.size == (32, 32) and image.mode == "L"
        assert np.asarray(image).max() > 200  # ink scaled to the full 0-255 range


def test_split_is_stratified_and_disjoint(digits):
    train, val = _counts(digits, "train"), _counts(digits, "val")
    for digit in train:
        share = val[digit] / (val[digit] + train[digit])
        assert abs(share - 0.2) < 0.01
    train_files = {p.name for p in (digits / "train").glob("*/*.png")}
    val_files = {p.name for p in (digits / "val").glob("*/*.png")}
    assert not train_files & val_files and len(train_files | val_files) == 1797


def test_writing_again_reuses_a_complete_folder(digits):
    files = sorted(digits.glob("*/*/*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    time.sleep(0.01)
    write_digits_imagefolder(digits)
    assert [f.stat().st_mtime_ns for f in sorted(digits.glob("*/*/*.png"))] == stamps


def test_an_incomplete_folder_is_written_again(digits):
    missing = next((digits / "train" / "7").iterdir())
    missing.unlink()
    write_digits_imagefolder(digits)
    assert missing.is_file() and sum(_counts(digits, "train").values()) == 1437


def test_short_demo_run_goes_end_to_end(digits, tmp_path, capsys):
    output = tmp_path / "demo"
    shutil.copytree(digits, output / "digits")  # a complete folder: the demo reuses it
    status = main(["demo", "--output", str(output), "epochs=1", "warmup_length=0"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "final val top-1" in printed and str(output / "predictions.png") in printed
    for name in ("metrics.jsonl", "config.yaml", "curves.png", "predictions.png"):
        assert (output / name).is_file(), name
    assert (output / "checkpoints" / "last.pt").is_file()
    assert (output / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_full_demo_reaches_97_percent_in_time_and_repeats_exactly(tmp_path):
    lines: list[str] = []
    first = run_demo(tmp_path / "first", say=lines.append)
    assert first["val_top1"] >= 97.0, lines
    assert first["seconds"] < 180
    second = run_demo(tmp_path / "second", say=lines.append)
    assert second["val_top1"] == first["val_top1"]
    assert second["val_right"] == first["val_right"]


def test_the_recipes_ship_inside_the_package():
    # An installed package (no source tree beside it) must still find the demo's recipe.
    packaged = Path(twins.__file__).parent / "configs"
    assert RECIPE.parent == packaged and RECIPE.is_file()
    repository = Path(__file__).resolve().parents[3] / "configs"
    assert sorted(p.name for p in packaged.glob("*.yaml")) == sorted(
        p.name for p in repository.glob("*.yaml")
    )
    assert RECIPE.read_text() == (repository / "demo.yaml").read_text()
