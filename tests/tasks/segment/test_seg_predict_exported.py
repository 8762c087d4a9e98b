"""A segmenter's exports (ONNX, `.pt2`) predict as its weights do: the same "out" logits within
the export tolerance, the same label maps, the palette and label values from the file's own
metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from twins.export.engine import TOLERANCE, relative_difference
from twins.export.runtimes import open_artifact
from twins.tasks import export
from twins.weights import load_weights, save_weights


@pytest.fixture(scope="module")
def segmenter(tiny_segmenter_run, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """The tiny segmenter, tested at a scale whose sides the exports take unpadded (they take
    sides from 64 pixels up, the eager model from 32: padding would change the borders)."""
    weights = load_weights(tiny_segmenter_run / "checkpoints" / "last.pt")
    weights.metadata["preprocessing"] = {
        **weights.metadata["preprocessing"],
        "img_scale": [160, 96],
    }
    checkpoint = tmp_path_factory.mktemp("segmenter") / "segmenter.safetensors"
    save_weights(weights, checkpoint)
    return checkpoint, twins.load_model(checkpoint).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(72, 96), (100, 64)]):
        paths.append(folder / f"photo{index}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.slow  # two segmenter exports: minutes on a busy CPU
@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_a_segmenter_export_gives_the_eager_logits_and_label_maps(
    segmenter, photos, tmp_path, format
):
    checkpoint, model = segmenter
    exported = export(checkpoint, format, tmp_path / f"seg.{format}", image_size=64, check=False)
    artifact = open_artifact(exported.path, device="cpu")
    assert artifact.metadata["dataset"]["reduce_zero_label"] is True
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = model(images)["out"].numpy()
    assert relative_difference(artifact(images)["out"].numpy(), reference) < TOLERANCE

    eager = twins.Predictor(checkpoint, device="cpu", output=tmp_path / "eager")(photos)
    rows = twins.Predictor(exported.path, device="cpu", output=tmp_path / "exported")(photos)
    for row, expected in zip(rows, eager, strict=True):
        written = np.array(Image.open(row["label_map"]))
        assert written.shape == Image.open(row["image"]).size[::-1]  # the photo's own pixels
        agree = (written == np.array(Image.open(expected["label_map"]))).mean()
        assert agree > 0.999  # logits equal to 1e-4: a near tie may flip a pixel
        assert (
            Image.open(row["label_map"]).getpalette()
            == Image.open(expected["label_map"]).getpalette()
        )
        assert sum(row["counts"].values()) == written.size
