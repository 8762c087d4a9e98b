"""`twins predict` on generated images: top-k lists, class names, folders, globs, bad files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from twins.cli.main import main
from twins.errors import TwinsError
from twins.predict import Predictor, find_images, imagenet_class_names, predict
from twins.weights import StateDict, save_weights

SHAPE = {"embed_dims": (16, 32, 40, 64), "depths": (1, 1, 1, 1)}


def _save_model(path, num_classes, class_names=None):
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=num_classes, **SHAPE)
    metadata = {"arch": "pcpvt_small", "model_args": model.model_args, "class_names": class_names}
    save_weights(StateDict(model.state_dict(), metadata), path)
    return model


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, size in enumerate([(48, 64), (70, 50), (64, 64)]):
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image{index}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(
        folder / "nested" / "gray.jpg"
    )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_images_come_from_files_folders_and_globs(images):
    found, missing = find_images([str(images), str(images / "*.png"), str(images / "none.png")])
    names = sorted(path.name for path in found)
    assert names == ["broken.jpg", "gray.jpg", "image0.png", "image1.png", "image2.png"]
    assert missing == [(str(images / "none.png"), "no such file or folder")]


def test_predictions_use_the_checkpoint_class_names(tmp_path, images):
    names = ["cat", "dog", "bird"]
    checkpoint = tmp_path / "model.safetensors"
    model = _save_model(checkpoint, 3, names)
    run = predict(checkpoint, [str(images)], topk=2, batch_size=2, image_size=64)
    assert len(run.predictions) == 4
    assert run.failures[0][0].endswith("broken.jpg") and "unreadable image" in run.failures[0][1]
    first = next(p for p in run.predictions if p.image.endswith("image0.png"))
    assert [label for _, label, _ in first.top] == [names[i] for i, _, _ in first.top]
    assert first.top[0][2] >= first.top[1][2]

    predictor = Predictor(checkpoint, image_size=64)
    with Image.open(images / "image0.png") as image:
        batch = predictor.transform(image.convert("RGB"))[None]
    with torch.no_grad():
        expected = model.eval()(batch).softmax(-1)[0]
    assert first.top[0][0] == int(expected.argmax())
    assert first.top[0][2] == pytest.approx(float(expected.max()), abs=1e-5)


def test_thousand_classes_get_imagenet_names(tmp_path, images):
    checkpoint = tmp_path / "imagenet.safetensors"
    _save_model(checkpoint, 1000)
    run = predict(checkpoint, [str(images / "image1.png")], topk=5, image_size=64)
    labels = imagenet_class_names()
    assert len(labels) == 1000 and labels[0] == "tench"
    assert [label for _, label, _ in run.predictions[0].top] == [
        labels[i] for i, _, _ in run.predictions[0].top
    ]


def test_cli_prints_readable_lists_and_json(tmp_path, images, capsys):
    checkpoint = tmp_path / "model.safetensors"
    _save_model(checkpoint, 3, ["cat", "dog", "bird"])
    base = ["predict", "--checkpoint", str(checkpoint), "--image-size", "64", "--topk", "3"]
    assert main([*base, str(images / "image0.png"), str(images / "broken.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("image0.png") and out[1].lstrip().startswith("1. ")
    assert len(out) == 5 and out[4].startswith("skipped") and "broken.jpg" in out[4]
    assert main([*base, "--json", str(images / "*.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["predictions"]) == 3 and result["failures"] == []
    assert {entry["label"] for entry in result["predictions"][0]["top"]} == {"cat", "dog", "bird"}
    assert main([*base, str(images / "broken.jpg")]) == 1


def test_nothing_to_predict_is_a_clear_error(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    _save_model(checkpoint, 3)
    with pytest.raises(TwinsError, match="no images to predict"):
        predict(checkpoint, [str(tmp_path / "nowhere")])
