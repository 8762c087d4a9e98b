"""The one metadata dict: made from a model, carried by every weights file we write, read back
by `load_weights`, and derived from a training checkpoint's config where its meta has none."""

import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from seed_models import tiny_model
from twins.weights import StateDict, load_weights, model_metadata, save_weights

PREPROCESSING = {
    "image_size": 32,
    "crop_pct": 1.0,
    "crop_mode": "squash",
    "interpolation": "bilinear",
    "mean": list(IMAGENET_DEFAULT_MEAN),
    "std": list(IMAGENET_DEFAULT_STD),
}


def test_model_metadata_describes_the_model_and_its_images():
    model = tiny_model("svt", act_layer="gelu_tanh")
    metadata = model_metadata(model, class_names=list("0123456789"), preprocessing=PREPROCESSING)
    assert metadata == {
        "arch": "svt_small",
        "model_args": model.model_args,
        "num_classes": 10,
        "act_layer": "gelu_tanh",
        "class_names": list("0123456789"),
        "preprocessing": PREPROCESSING,
        "task": "classify",
    }
    assert model_metadata(model)["preprocessing"] is None


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt"])
def test_written_metadata_is_read_back(tmp_path, suffix):
    model = tiny_model("pcpvt")
    metadata = model_metadata(model, list("abcdefghij"), PREPROCESSING)
    path = tmp_path / f"weights{suffix}"
    save_weights(StateDict(model.state_dict(), metadata), path)
    weights = load_weights(path)
    assert weights.metadata == {**metadata, "format": weights.metadata["format"]}


def _training_checkpoint(path, meta, config):
    model = tiny_model("pcpvt")
    torch.save(
        {"format": "twins-checkpoint", "version": 1, "model": model.state_dict(), "meta": meta,
         "config": config},
        path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("semantics", "crop_mode"), [("seed", "squash"), ("official", "center"), ("twins", "center")]
)
def test_training_checkpoints_without_it_derive_it_from_their_config(
    tmp_path, semantics, crop_mode
):
    config = {"image_size": 32, "crop_pct": 1.0, "interpolation": "random", "semantics": semantics}
    _training_checkpoint(tmp_path / "best.pt", {"arch": "pcpvt_small"}, config)
    preprocessing = load_weights(tmp_path / "best.pt").metadata["preprocessing"]
    assert preprocessing == {**PREPROCESSING, "crop_mode": crop_mode, "interpolation": "bicubic"}


def test_the_checkpoint_meta_wins_over_its_config(tmp_path):
    config = {"image_size": 224, "crop_pct": 0.875, "interpolation": "bicubic"}
    meta = {"arch": "pcpvt_small", "preprocessing": PREPROCESSING}
    _training_checkpoint(tmp_path / "best.pt", meta, config)
    assert load_weights(tmp_path / "best.pt").metadata["preprocessing"] == PREPROCESSING
