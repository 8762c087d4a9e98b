"""`twins predict` on generated images: top-k lists, class names, folders, globs, bad files;
the same predictions from a training checkpoint and every file made from it; the same
decoding and preparation as the eval data loader; one-line refusals."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

import twins
from twins.cli.main import main
from twins.config import build_config
from twins.convert import convert
from twins.data import SafeImageFolder, build_loader
from twins.data.images import find_images
from twins.errors import TwinsError
from twins.export.engine import exported_metadata
from twins.tasks import export, predict
from twins.tasks.classify.predict import Predictor, imagenet_class_names
from twins.tasks.classify.transforms import build_eval_transform
from twins.weights import StateDict, model_metadata, save_weights

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
    batch = predictor.load(images / "image0.png")[None]
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
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1  # one object, as the help says
    result = json.loads(printed)
    assert len(result["predictions"]) == 3 and result["failures"] == []
    assert {entry["label"] for entry in result["predictions"][0]["top"]} == {"cat", "dog", "bird"}
    assert main([*base, str(images / "broken.jpg")]) == 1


def test_json_help_says_what_is_printed(capsys):
    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "print JSON instead of text; one object: predictions" in text
    assert "per line" not in text


def test_nothing_to_predict_is_a_clear_error(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    _save_model(checkpoint, 3)
    with pytest.raises(TwinsError, match="no images to predict"):
        predict(checkpoint, [str(tmp_path / "nowhere")])


# A model with the demo's kind of custom widths: pcpvt_small's own heads do not divide them.
CUSTOM = {"embed_dims": [16, 32, 64, 128], "num_heads": [1, 2, 4, 8], "depths": [1, 1, 1, 1]}
NAMES = ["zero", "one", "two"]


def _config(**values):
    return build_config(
        {"arch": "pcpvt_small", "model_args": CUSTOM, "num_classes": 3, "image_size": 32,
         "crop_pct": 1.0, "batch_size": 4, "num_parallel_workers": 0, **values}
    )  # fmt: skip


def _training_checkpoint(path, config):
    """A checkpoint as training writes it today: meta without preprocessing, the config."""
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=3, **CUSTOM)
    meta = {k: v for k, v in model_metadata(model, NAMES).items() if k != "preprocessing"}
    checkpoint = {"format": "twins-checkpoint", "version": 1, "model": model.state_dict(),
                  "meta": meta, "config": config.to_dict(), "epoch": 1}  # fmt: skip
    torch.save(checkpoint, path)
    return model.eval()


def _photos(folder, count=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        pixels = rng.integers(0, 256, (40 + 8 * index, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{index}.png")
    return sorted(str(path) for path in folder.iterdir())


def _probabilities(run):
    return {p.image: [(index, prob) for index, _, prob in p.top] for p in run.predictions}


def test_converted_and_exported_weights_predict_what_the_checkpoint_predicts(tmp_path):
    best = tmp_path / "best.pt"
    model = _training_checkpoint(best, _config())
    photos = _photos(tmp_path / "photos")
    reference = predict(best, photos, topk=3)
    assert reference.preprocessing["image_size"] == 32
    assert reference.preprocessing["crop_pct"] == 1.0
    assert reference.preprocessing["crop_mode"] == "squash"  # the seed's semantics, the default

    for name in ("weights.safetensors", "weights.pth"):
        convert(best, tmp_path / name)
        run = predict(tmp_path / name, photos, topk=3)
        assert run.preprocessing == reference.preprocessing, name
        assert _probabilities(run) == _probabilities(reference), name
    release = tmp_path / "release.safetensors"
    export(best, "safetensors", release)
    assert _probabilities(predict(release, photos, topk=3)) == _probabilities(reference)

    onnx_path = tmp_path / "model.onnx"
    export(best, "onnx", onnx_path, image_size=96)
    metadata = exported_metadata(onnx_path)
    assert metadata["preprocessing"] == reference.preprocessing
    assert metadata["class_names"] == NAMES
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    loader = Predictor(best)
    assert loader.preprocessing == metadata["preprocessing"]
    batch = torch.stack([loader.load(photo) for photo in photos])
    (logits,) = session.run(None, {"images": batch.numpy()})
    with torch.no_grad():
        expected = model(batch).numpy()
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()
    top1 = {p.image: p.top[0][0] for p in reference.predictions}
    assert [top1[photo] for photo in photos] == logits.argmax(axis=1).tolist()


def _awkward_images(folder):
    """An RGBA image with transparent pixels, a 16-bit grayscale PNG and a JPEG whose EXIF
    says "rotate 90 degrees": each decoded differently by `Image.convert("RGB")`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (40, 52, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0  # transparent rows storing random colours
    Image.fromarray(rgba).save(folder / "alpha.png")
    wide = (rng.integers(0, 65536, (44, 36)) // 256 * 256 + 128).astype(np.uint16)
    Image.fromarray(wide).save(folder / "sixteen_bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, rotate 270 degrees to view
    photo = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)


def test_the_same_image_gives_the_same_logits_through_predict_and_eval(tmp_path):
    config = _config(data_url=str(tmp_path / "data"), semantics="twins")
    best = tmp_path / "best.pt"
    model = _training_checkpoint(best, config)
    _awkward_images(tmp_path / "data" / "val" / "zero")
    for name in NAMES[1:]:
        _photos(tmp_path / "data" / "val" / name, count=1)
    val_set = SafeImageFolder(tmp_path / "data" / "val", transform=build_eval_transform(config))
    loader_probabilities = {}
    with torch.no_grad():
        paths = iter(path for path, _ in val_set.samples)  # the eval loader keeps their order
        for images, _ in build_loader(val_set, config, train=False):
            for row in model(images).softmax(-1):
                loader_probabilities[next(paths)] = row
    assert val_set.converted == 2  # RGBA and 16-bit, as the loader reports them

    awkward = sorted(str(p) for p in (tmp_path / "data" / "val" / "zero").iterdir())
    run = predict(best, awkward, topk=3)
    assert [p.image for p in run.predictions] == awkward and not run.failures
    for prediction in run.predictions:
        expected = loader_probabilities[prediction.image]
        for index, _, probability in prediction.top:
            assert probability == pytest.approx(float(expected[index]), abs=1e-6)
    rotated = Predictor(best).load(awkward[1])
    assert torch.equal(rotated, val_set[[path for path, _ in val_set.samples].index(awkward[1])][0])


def test_gifs_are_found_in_folders_and_globs(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    Image.fromarray(frames).save(tmp_path / "animation.gif")
    found, missing = find_images([str(tmp_path), str(tmp_path / "*.gif")])
    assert found == [tmp_path / "animation.gif"] and missing == []


def test_bare_weights_of_a_custom_model_need_and_take_model_args(tmp_path, caplog):
    best = tmp_path / "best.pt"
    model = _training_checkpoint(best, _config())
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)  # as the official release: tensors only
    photos = _photos(tmp_path / "photos", count=1)
    with pytest.raises(TwinsError, match="model_args") as error:
        predict(bare, photos, arch="pcpvt_small")
    assert error.value.argument == "model_args"
    run = predict(bare, photos, arch="pcpvt_small", model_args={"num_heads": [1, 2, 4, 8]})
    assert run.predictions and run.preprocessing["image_size"] == 224  # the file says nothing
    (said,) = [r.getMessage() for r in caplog.records if "preprocessing" in r.getMessage()]
    assert said.startswith(f"{bare} says nothing of its preprocessing: using 224 px, crop 0.875")


@pytest.mark.parametrize(
    ("settings", "argument", "message"),
    [
        ({"device": "cuda"}, "device", "sees none"),
        ({"device": "tpu"}, "device", "unknown device 'tpu'"),
        ({"crop_pct": 5}, "crop_pct", "crop_pct is the fraction"),
        ({"crop_pct": 0}, "crop_pct", "crop_pct is the fraction"),
        ({"image_size": 0}, "image_size", "image_size must be"),
        ({"image_size": 16}, "image_size", "takes images of at least 32 pixels a side"),
        ({"topk": 0}, "topk", "topk must be at least 1"),
    ],
)
def test_settings_that_cannot_work_are_one_line_errors(
    tmp_path, monkeypatch, settings, argument, message
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    checkpoint = tmp_path / "model.safetensors"
    _save_model(checkpoint, 3)
    photos = _photos(tmp_path / "photos", count=1)
    with pytest.raises(TwinsError, match=message) as error:
        predict(checkpoint, photos, **settings)
    assert error.value.argument == argument
    assert "\n" not in str(error.value) and "--" not in str(error.value)


def test_a_folder_given_as_the_checkpoint_is_named_as_one(tmp_path):
    photos = _photos(tmp_path / "photos", count=1)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(TwinsError, match="is a folder without model.safetensors") as error:
        predict(tmp_path / "checkpoints", photos)
    assert "a training run keeps checkpoints/best.pt" in str(error.value)
