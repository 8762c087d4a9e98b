"""Weights without metadata of any task's model are named with --arch (and --model-args) by
every command that takes a weights file; a file that names no model is refused listing the
names by task; predict refuses, in one line, an option the file's task does not read."""

from __future__ import annotations

import json

import pytest
import torch

import twins
from twins.cli.main import main
from twins.weights import load_weights


@pytest.fixture(scope="module")
def plain_segmenter(tiny_segmenter_run, tmp_path_factory):
    """(a plain state dict of the tiny segmenter, its --model-args, a validation image)."""
    weights = load_weights(tiny_segmenter_run / "checkpoints" / "last.pt")
    path = tmp_path_factory.mktemp("plain") / "segmenter.pth"
    torch.save(dict(weights), path)
    image = sorted((tiny_segmenter_run.parent / "data" / "images" / "validation").glob("*"))[0]
    return path, json.dumps(weights.metadata["model_args"]), image


def test_predict_export_and_convert_take_a_dense_arch(plain_segmenter, tmp_path, capsys):
    path, model_args, image = plain_segmenter
    named = ["--arch", "semantic_fpn_svt_small", "--model-args", model_args]
    out = tmp_path / "labels"
    assert (
        main(["predict", "--checkpoint", str(path), *named, str(image), "--output", str(out)]) == 0
    )
    assert (out / f"{image.stem}.png").is_file()
    exported = tmp_path / "segmenter.safetensors"
    assert main(["export", "--checkpoint", str(path), *named, "--format", "safetensors", "-o",
                 str(exported)]) == 0  # fmt: skip
    converted = tmp_path / "converted.safetensors"
    assert main(["convert", str(path), str(converted), *named]) == 0
    for written in (exported, converted):
        model = twins.load_model(written)
        assert model.arch == "semantic_fpn_svt_small" and model.num_classes == 11


def test_a_file_naming_no_model_is_refused_with_the_names_by_task(plain_segmenter, capsys):
    path, _, image = plain_segmenter
    assert main(["predict", "--checkpoint", str(path), str(image), "--output", "unused"]) == 2
    error = capsys.readouterr().err
    assert "pass arch" in error and "segment: semantic_fpn_<variant>, upernet_<variant>" in error
    assert "classify: pcpvt_small" in error and "detect: retinanet_<variant>" in error


def test_predict_refuses_an_option_the_files_task_does_not_read(plain_segmenter, capsys):
    path, model_args, image = plain_segmenter
    named = ["--arch", "semantic_fpn_svt_small", "--model-args", model_args]
    args = [
        "predict",
        "--checkpoint",
        str(path),
        *named,
        str(image),
        "--output",
        "x",
        "--topk",
        "3",
    ]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "topk: not read by a segment model's predict (it reads output, slide)" in error
    assert len(error.strip().splitlines()) == 1
