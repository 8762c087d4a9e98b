"""`twins.load_model`: the model a file describes, from every file the toolkit writes, with its
classes and preprocessing; the README's first example; `create_model(pretrained=...)` on a
trained checkpoint."""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from factories import make_config
from twins.atomic import save_torch
from twins.convert import convert
from twins.errors import TwinsError
from twins.tasks import export
from twins.tasks.classify.predict import Predictor
from twins.train import Trainer
from twins.train.resume import checkpoint
from twins.weights import load_weights

README = Path(__file__).resolve().parents[2] / "README.md"
# Widths of its own, with heads that pcpvt_small's (1, 2, 5, 8) are not: only the file knows.
CUSTOM = {"embed_dims": [16, 32, 64, 128], "num_heads": [1, 2, 4, 8], "depths": [1, 1, 1, 1]}
CLASSES = ("class_0", "class_1", "class_2", "class_3")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint as training writes it (its writer, after two steps with EMA, 32 px)."""
    torch.manual_seed(0)
    config = make_config(model_args=CUSTOM, with_ema=True, ema_decay=0.5)
    model = twins.create_model(config.arch, num_classes=4, **CUSTOM)
    trainer = Trainer(config, model, steps_per_epoch=2)
    for _ in range(2):
        trainer.step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_torch(checkpoint(trainer, list(CLASSES), {}), path)
    return path


def _logits(model, images):
    with torch.no_grad():
        return model(images)


def test_every_file_gives_back_the_trained_model(trained, tmp_path):
    reference = twins.load_model(trained)
    assert not reference.training and reference.model_args["num_heads"] == [1, 2, 4, 8]
    cfg = reference.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["label_names"] == CLASSES
    images = torch.randn(2, 3, 32, 40)
    expected = _logits(reference, images)
    written = [trained]
    for name in ("w.pth", "w.safetensors", "w.ckpt"):
        convert(trained, tmp_path / name)
        written.append(tmp_path / name)
    export(trained, "pt2", tmp_path / "w.pt2", image_size=96, check=False)
    written.append(tmp_path / "w.pt2")
    for path in written:
        model = twins.load_model(path)
        assert model.model_args == reference.model_args, path.name
        assert model.pretrained_cfg == cfg, path.name
        assert torch.equal(_logits(model, images), expected), path.name

    _pickle_first_weight(tmp_path / "w.pt2", tmp_path / "pickled.pt2")
    with pytest.raises(TwinsError, match="stored as a pickle"):  # never unpickled: it could run
        twins.load_model(tmp_path / "pickled.pt2")

    ema = twins.load_model(trained, ema=True)
    ema_weights = load_weights(trained, ema=True)
    assert all(torch.equal(ema.state_dict()[k], v) for k, v in ema_weights.items())
    assert not torch.equal(_logits(ema, images), expected)
    with pytest.raises(TwinsError, match="holds no EMA weights") as error:
        twins.load_model(tmp_path / "w.safetensors", ema=True)
    assert "\n" not in str(error.value)


def _pickle_first_weight(source: Path, destination: Path) -> None:
    """A copy of a .pt2 whose weights config says its first weight is a pickle."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(destination, "w") as copy:
        for item in archive.infolist():
            content = archive.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(content)
                next(iter(config["config"].values()))["use_pickle"] = True
                content = json.dumps(config).encode()
            copy.writestr(item, content)


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert "twins.load_model(" in blocks[0], "the README's first Python example loads a model"
    return blocks[0]


def test_the_readme_first_example_predicts_with_a_trained_checkpoint(
    trained, tmp_path, monkeypatch, capsys
):
    code = _readme_example()
    paths = re.findall(r'"([^"]+\.(?:pt|jpg))"', code)
    assert len(paths) == 2, paths
    checkpoint, photo = (tmp_path / path for path in paths)
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(trained, checkpoint)
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    run = Predictor(trained).predict([photo], topk=1)
    ((_, label, probability),) = run.predictions[0].top
    assert printed == [label, f"{probability:.1%}"]


def test_create_model_takes_the_recorded_shape_and_says_what_it_does_to_the_head(trained, caplog):
    images = torch.randn(1, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="twins.notes"):
        model = twins.create_model("pcpvt_small", pretrained=trained)  # no shape given
    assert model.model_args["num_heads"] == [1, 2, 4, 8] and model.num_classes == 1000
    (said,) = [record.getMessage() for record in caplog.records]
    assert said == (
        "pretrained: the file's 4-class head dropped; a new 1000-class head (pass "
        "num_classes=4 to keep it, or use twins.load_model)"
    )
    caplog.clear()
    kept = twins.create_model("pcpvt_small", pretrained=trained, num_classes=4)
    assert not caplog.records
    assert torch.equal(_logits(kept.eval(), images), _logits(twins.load_model(trained), images))
