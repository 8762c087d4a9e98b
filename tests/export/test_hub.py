"""`twins export --format hf` (and `twins convert SRC DIR`): the Hub layout that timm's
`local-dir:` loader, transformers' `AutoModelForImageClassification` and `twins.load_model`
read back as the same model, and the model card a training checkpoint's run fills (the
segmenter's and detector's folders: in their tasks' export tests)."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import twins
from twins.cli.main import main
from twins.export.engine import EXPORT_FORMATS
from twins.models import VARIANTS
from twins.tasks import fit
from twins.weights import StateDict, model_metadata, save_weights

CLASSES = ["cat", "dog", "eel"]
PREPROCESSING = {
    "image_size": 96,
    "crop_pct": 0.875,
    "crop_mode": "center",
    "interpolation": "bilinear",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
}
# 224: a side every stage's map of which SVT's 7 x 7 windows divide (timm pads without a mask).
SIDE = 224


def tiny(variant: str) -> dict:
    """The variant's heads and ratios, with widths of 8 per head and shallow stages (two blocks
    for SVT: LSA and GSA)."""
    heads = VARIANTS[variant]["num_heads"]
    depths = [2] * 4 if VARIANTS[variant].get("wss") else [1] * 4
    return {"embed_dims": [8 * h for h in heads], "depths": depths}


def relative(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).abs().max() / reference.abs().max())


@pytest.fixture
def described_file(tmp_path):
    def write(variant: str):
        torch.manual_seed(0)
        model = twins.create_model(variant, num_classes=3, **tiny(variant)).eval()
        path = tmp_path / f"{variant}.safetensors"
        metadata = model_metadata(model, CLASSES, PREPROCESSING)
        save_weights(StateDict(model.state_dict(), metadata), path)
        return model, path

    return write


def test_the_cli_lists_hf():
    from twins.cli.export import FORMATS

    assert FORMATS == EXPORT_FORMATS


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_and_transformers_load_the_classifier(variant, described_file, tmp_path):
    from transformers import AutoModelForImageClassification

    model, path = described_file(variant)
    folder = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(path), "--format", "hf", "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == f"twins_{variant}" and config["num_classes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, 96, 96]
    assert config["pretrained_cfg"]["crop_pct"] == 0.875

    images = torch.randn(2, 3, SIDE, SIDE)
    ours = twins.load_model(folder)
    with torch.no_grad():
        reference = ours(images)
        torch.testing.assert_close(reference, model(images), rtol=0, atol=0)
        in_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert relative(in_timm(images), reference) < 1e-5
        in_transformers = AutoModelForImageClassification.from_pretrained(folder).eval()
        assert relative(in_transformers(pixel_values=images).logits, reference) < 1e-5
    assert list(in_timm.pretrained_cfg["label_names"]) == CLASSES
    assert list(ours.pretrained_cfg["label_names"]) == CLASSES
    assert [in_transformers.config.id2label[i] for i in range(3)] == CLASSES
    data_config = timm.data.resolve_data_config(model=in_timm)
    assert data_config["input_size"] == (3, 96, 96) and data_config["crop_pct"] == 0.875


def test_a_training_checkpoint_fills_the_model_card(imagefolder, tiny_config, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(imagefolder, run, epochs=1))
    folder = tmp_path / "hf"
    assert main(["convert", str(run / "checkpoints" / "best.pt"), str(folder)]) == 0
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")
    for said in ("## Data", str(imagefolder), "## Recipe", "semantics", "## Evaluation"):
        assert said in card, said
    assert "val_top1" in card and "best score" in card
    assert f"twins train -c recipe.yaml --data {imagefolder}" in card
    recipe = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "recipe.yaml").write_text(recipe)
    assert twins.train.load_config(tmp_path / "recipe.yaml").arch == "pcpvt_small"
    trained = twins.load_model(run / "checkpoints" / "best.pt")
    assert twins.load_model(folder).pretrained_cfg == trained.pretrained_cfg


def test_an_export_into_its_own_layout_replaces_it(described_file, tmp_path):
    model, path = described_file("pcpvt_small")
    folder = tmp_path / "clone"
    (folder / ".git").mkdir(parents=True)  # a clone of a Hub repository, before the first push
    (folder / "model.safetensors").write_bytes(b"old")
    twins.tasks.export(path, "hf", folder)
    assert (folder / ".git").is_dir()
    assert twins.load_model(folder).num_classes == 3
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("where", ["file", "other files", "extension"])
def test_a_wrong_output_is_one_line_and_writes_nothing(where, described_file, tmp_path, capsys):
    _, path = described_file("pcpvt_small")
    output = {"file": path, "other files": tmp_path, "extension": tmp_path / "model.onnx"}[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", "--checkpoint", str(path), "--format", "hf", "-o", str(output)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(output) in lines[0] and "folder" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
