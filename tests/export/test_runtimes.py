"""Exported models run as they are (`twins.export.runtimes`): for each task and format the
export writes, the artifact gives the eager model's outputs within the export tolerance, and
`twins.Predictor` gives the same rows from the export as from the weights; a file that could
run code, or says nothing of its model, is refused in one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from factories import TINY_MODEL
from twins.errors import TwinsError
from twins.export.engine import EXTENSIONS, TOLERANCE, relative_difference
from twins.export.runtimes import is_artifact, open_artifact
from twins.tasks import export
from twins.weights import StateDict, model_metadata, save_weights

PREPROCESSING = {"image_size": 64, "crop_pct": 0.875}
FORMATS = ("onnx", "pt2", "openvino")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    model = twins.create_model("svt_small", num_classes=4, **TINY_MODEL).eval()
    metadata = model_metadata(model, ["a", "b", "c", "d"], PREPROCESSING)
    save_weights(StateDict(model.state_dict(), metadata), folder / "model.safetensors")
    return folder / "model.safetensors", model


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(72, 96), (100, 64)]):
        paths.append(folder / f"photo{index}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def exports(classifier, tmp_path_factory) -> dict[str, Path]:
    """The classifier exported once in each format (tracing takes a while)."""
    folder = tmp_path_factory.mktemp("exports")
    checkpoint, _ = classifier
    return {
        format: export(
            checkpoint, format, folder / f"model{EXTENSIONS[format]}", image_size=64, check=False
        ).path
        for format in FORMATS
    }


def _difference(result: torch.Tensor, reference: torch.Tensor) -> float:
    return relative_difference(result.float().numpy(), reference.float().numpy())


@pytest.mark.parametrize("format", FORMATS)
def test_a_classifier_export_gives_the_eager_logits(classifier, exports, format):
    _, model = classifier
    artifact = open_artifact(exports[format], device="cpu")
    assert is_artifact(exports[format]) and artifact.metadata["class_names"] == ["a", "b", "c", "d"]
    assert artifact.metadata["preprocessing"]["image_size"] == 64
    images = torch.randn(3, 3, 64, 96)  # another size than the one traced at
    with torch.no_grad():
        reference = model(images)
    assert _difference(artifact(images), reference) < TOLERANCE


@pytest.mark.parametrize("format", FORMATS)
def test_a_classifier_export_predicts_what_its_weights_predict(classifier, exports, photos, format):
    checkpoint, _ = classifier
    eager = twins.Predictor(checkpoint, device="cpu")(photos)
    rows = twins.Predictor(exports[format], device="cpu")(photos)
    for row, expected in zip(rows, eager, strict=True):
        assert row["image"] == expected["image"]
        assert [t["index"] for t in row["top"]] == [t["index"] for t in expected["top"]]
        for got, want in zip(row["top"], expected["top"], strict=True):
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-4)


def test_twins_predict_streams_an_openvino_model_as_its_weights(
    classifier, exports, photos, tmp_path
):
    from twins.cli.main import main

    checkpoint, _ = classifier
    images = [str(path) for path in photos]
    for source, out in ((checkpoint, "eager.jsonl"), (exports["openvino"], "openvino.jsonl")):
        args = ["predict", "--checkpoint", str(source), *images, "--device", "cpu"]
        assert main([*args, "--out", str(tmp_path / out)]) == 0
    eager, exported = (
        [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        for name in ("eager.jsonl", "openvino.jsonl")
    )
    assert [row["image"] for row in exported] == [row["image"] for row in eager]
    for row, expected in zip(exported, eager, strict=True):
        assert [t["label"] for t in row["top"]] == [t["label"] for t in expected["top"]]


def test_a_pt2_holding_pickles_is_refused_before_loading(exports, tmp_path):
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(exports["pt2"]) as source, zipfile.ZipFile(tampered, "w") as target:
        for member in source.namelist():
            content = source.read(member)
            if member.endswith("model_weights_config.json"):
                config = json.loads(content)
                next(iter(config["config"].values()))["use_pickle"] = True
                content = json.dumps(config).encode()
            target.writestr(member, content)
    with pytest.raises(TwinsError, match="pickled objects"):
        open_artifact(tampered, device="cpu")


def test_an_onnx_without_metadata_is_refused(exports, tmp_path):
    import onnx

    graph = onnx.load(exports["onnx"])
    del graph.metadata_props[:]
    onnx.save(graph, tmp_path / "bare.onnx")
    with pytest.raises(TwinsError, match="carries no twins metadata") as caught:
        twins.Predictor(tmp_path / "bare.onnx", device="cpu")
    assert "\n" not in str(caught.value)
