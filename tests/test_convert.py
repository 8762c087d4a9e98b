"""`twins convert`: every direction between .pth, .ckpt and .safetensors, through the CLI."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import twins
from seed_models import tiny_model
from twins.cli.main import main
from twins.convert import convert
from twins.errors import TwinsError
from twins.tasks import model_from_weights, predict
from twins.weights import StateDict, load_weights, model_metadata, save_weights
from twins.weights.mindspore_proto import read_tags


def _seed_logits_error(model, fixtures, family):
    images = torch.from_numpy(np.load(fixtures / f"seed_{family}_input.npy"))
    expected = np.load(fixtures / f"seed_{family}_logits.npy")
    with torch.no_grad():
        logits = model.eval()(images).numpy()
    return np.abs(logits - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("family", ["pcpvt", "svt"])
def test_seed_ckpt_to_safetensors_reproduces_the_seed_logits(
    seed_fixtures, tmp_path, family, capsys
):
    output = tmp_path / f"{family}.safetensors"
    assert main(["convert", str(seed_fixtures / f"seed_{family}_train.ckpt"), str(output)]) == 0
    assert "mindspore -> safetensors" in capsys.readouterr().out
    weights = load_weights(output)
    assert weights.metadata["act_layer"] == "gelu_tanh"
    model = tiny_model(family, act_layer="gelu_tanh")
    model.load_state_dict(weights, strict=True)
    assert _seed_logits_error(model, seed_fixtures, family) <= 1e-5


def test_with_arch_the_safetensors_rebuild_the_model(seed_fixtures, tmp_path):
    output = tmp_path / "svt.safetensors"
    result = convert(seed_fixtures / "seed_svt_train.ckpt", output, arch="svt_small")
    assert result.metadata["arch"] == "svt_small"
    weights = load_weights(output)
    assert weights.metadata["model_args"]["embed_dims"] == [16, 32, 64, 128]
    model = twins.create_model("svt_small", pretrained=output, **weights.metadata["model_args"])
    assert _seed_logits_error(model, seed_fixtures, "svt") <= 1e-5


def test_pth_to_ckpt_to_safetensors_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    model = twins.create_model(
        "svt_small", num_classes=4, embed_dims=(16, 32, 64, 128), depths=(2, 2, 2, 2)
    )
    official = tmp_path / "official.pth"
    torch.save(model.state_dict(), official)
    ckpt = tmp_path / "seed.ckpt"
    assert main(["convert", str(official), str(ckpt)]) == 0
    tags = read_tags(ckpt)
    assert "model.blocks.0.0.attn.k.weight" in tags and "model.norm.gamma" in tags
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(ckpt), str(back), "--arch", "svt_small"]) == 0
    # The bare source says nothing of heads and windows: the variant's are used, and said.
    assert "twins: note: the weights do not record num_heads or wss" in capsys.readouterr().err
    weights = load_weights(back)
    assert weights.metadata["arch"] == "svt_small" and weights.metadata["num_classes"] == 4
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    pth_again = tmp_path / "again.pth"
    assert main(["convert", str(back), str(pth_again)]) == 0
    assert capsys.readouterr().err == ""  # a .pth keeps the metadata beside the tensors
    assert load_weights(pth_again).metadata == {**weights.metadata, "format": "torch"}
    bare = torch.load(pth_again, weights_only=True)  # still the official bare state dict
    assert set(bare) == set(model.state_dict())
    model.load_state_dict(bare, strict=True)
    assert main(["convert", str(pth_again), str(tmp_path / "again.ckpt")]) == 0
    assert capsys.readouterr().err == ""  # so does a .ckpt
    assert load_weights(tmp_path / "again.ckpt").metadata == {
        **weights.metadata,
        "format": "mindspore",
    }


def test_mistakes_exit_with_one_line(tmp_path, capsys):
    source = tmp_path / "w.pth"
    torch.save(
        twins.create_model(
            "pcpvt_small", num_classes=3, embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1)
        ).state_dict(),
        source,
    )
    assert main(["convert", str(source), str(tmp_path / "w.onnx")]) == 2
    assert (
        main(["convert", str(source), str(tmp_path / "w.safetensors"), "--arch", "svt_small"]) == 2
    )
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "w.ckpt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("twins: error: ") for line in errors)
    assert "do not fit svt_small" in errors[1]
    assert not (tmp_path / "w.safetensors").exists()


def _training_checkpoint(path):
    model = twins.create_model(
        "pcpvt_small", num_classes=3, embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1)
    )
    meta = {"arch": "pcpvt_small", "model_args": model.model_args, "num_classes": 3}
    torch.save(
        {"format": "twins-checkpoint", "version": 1, "model": model.state_dict(), "meta": meta,
         "optimizer": {}, "epoch": 2},
        path,
    )  # fmt: skip
    return path.read_bytes()


def test_convert_never_writes_over_its_source_or_a_training_checkpoint(tmp_path, capsys):
    last = tmp_path / "last.pt"
    content = _training_checkpoint(last)
    os.link(last, tmp_path / "hard.pt")
    (tmp_path / "soft.pt").symlink_to(last)
    for destination in ("last.pt", "hard.pt", "soft.pt", "../" + tmp_path.name + "/last.pt"):
        with pytest.raises(TwinsError, match="is the file being read") as error:
            convert(last, tmp_path / destination)
        assert error.value.argument == "destination"
    weights = tmp_path / "weights.pth"
    convert(last, weights)
    with pytest.raises(TwinsError, match="last.pt is a training checkpoint"):
        convert(weights, last)
    assert main(["convert", str(last), str(last)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert last.read_bytes() == content  # the resumable checkpoint is untouched
    convert(last, weights)  # weights written before may be replaced


def test_nan_or_integer_weights_are_not_converted(tmp_path):
    state_dict = tiny_model("pcpvt").state_dict()
    state_dict["norm.weight"][0] = float("nan")
    torch.save(state_dict, tmp_path / "nan.pth")
    with pytest.raises(TwinsError, match="NaN or infinite values in norm.weight"):
        convert(tmp_path / "nan.pth", tmp_path / "nan.safetensors")
    state_dict = tiny_model("pcpvt").state_dict()
    state_dict["head.weight"] = state_dict["head.weight"].to(torch.int32)
    torch.save(state_dict, tmp_path / "int.pth")
    with pytest.raises(TwinsError, match=r"head.weight \(torch.int32\)"):
        convert(tmp_path / "int.pth", tmp_path / "int.safetensors")
    with pytest.raises(TwinsError, match="dtype head.weight torch.int32 in file"):
        convert(tmp_path / "int.pth", tmp_path / "int.safetensors", arch="pcpvt_small")
    assert not list(tmp_path.glob("*.safetensors"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".ckpt"])
def test_a_destination_that_cannot_be_written_is_one_line(tmp_path, capsys, suffix):
    source = tmp_path / "w.pth"
    torch.save(tiny_model("pcpvt").state_dict(), source)
    folder = tmp_path / f"folder{suffix}"  # a folder, even one named like a weights file
    folder.mkdir()
    unwritable = "/proc/twins_weights" + suffix  # open() there fails: no file can be made
    for destination in (tmp_path, folder, unwritable, source / f"w{suffix}"):
        assert main(["convert", str(source), str(destination)]) == 2, destination
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("twins: error: ") for line in lines)
    assert f"{tmp_path} is a folder: name the file to write in it, e.g. {tmp_path}/w." in lines[0]
    assert f"{folder} is a folder: name the file to write in it" in lines[1]
    assert f"cannot write {unwritable}" in lines[2] and "choose a folder you may write" in lines[2]
    assert "a file stands where a folder is needed" in lines[3]
    assert sorted(p.name for p in folder.iterdir()) == []


# A model with its own widths and heads: svt_small's heads (2, 4, 8, 16) divide these widths too,
# so nothing but the file can say that they are (1, 2, 4, 8).
OWN_SVT = {"embed_dims": [16, 32, 64, 128], "num_heads": [1, 2, 4, 8], "depths": [2, 2, 2, 2]}
TRAINED_AT_32 = {"image_size": 32, "crop_pct": 1.0, "crop_mode": "squash",
                 "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}  # fmt: skip


def _photos(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, size in enumerate([(40, 56), (64, 48)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            folder / f"{index}.png"
        )
    return sorted(str(path) for path in folder.iterdir())


def test_a_round_trip_through_every_format_gives_back_the_same_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = twins.create_model("svt_small", num_classes=3, **OWN_SVT).eval()
    metadata = model_metadata(model, ["cat", "dog", "owl"], TRAINED_AT_32)
    source = tmp_path / "model.pth"
    save_weights(StateDict(model.state_dict(), metadata), source)
    written = []
    for chain in (["model.ckpt", "back.pth"], ["model.safetensors", "again.ckpt"]):
        previous = source
        for name in chain:
            assert main(["convert", str(previous), str(tmp_path / name)]) == 0
            previous = tmp_path / name
            written.append(previous)
    assert capsys.readouterr().err == ""  # nothing lost, nothing guessed

    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        logits = model(images)
    photos = _photos(tmp_path / "photos")
    reference = predict(source, photos, topk=3)
    assert reference.preprocessing == TRAINED_AT_32
    for path in written:
        weights = load_weights(path)
        assert {key: weights.metadata.get(key) for key in metadata} == metadata, path.name
        assert weights.metadata["model_args"]["num_heads"] == [1, 2, 4, 8]
        assert weights.metadata["act_layer"] == "gelu"
        with torch.no_grad():
            assert torch.equal(model_from_weights(weights)(images), logits), path.name
        run = predict(path, photos, topk=3)
        assert run.preprocessing == TRAINED_AT_32, path.name
        assert run.to_json()["predictions"] == reference.to_json()["predictions"], path.name


def test_pytorch_weights_in_a_ckpt_keep_their_exact_gelu(tmp_path, seed_fixtures):
    """A .ckpt this toolkit writes says which GELU its weights use; the seed's say nothing and
    are MindSpore's tanh GELU."""
    official = tmp_path / "official.pth"
    torch.save(tiny_model("svt").state_dict(), official)  # timm and the official release: bare
    convert(official, tmp_path / "svt.ckpt")
    convert(tmp_path / "svt.ckpt", tmp_path / "back.pth")
    assert load_weights(tmp_path / "back.pth").metadata["act_layer"] == "gelu"
    convert(seed_fixtures / "seed_svt_train.ckpt", tmp_path / "seed.pth")
    assert load_weights(tmp_path / "seed.pth").metadata["act_layer"] == "gelu_tanh"
    convert(tmp_path / "seed.pth", tmp_path / "seed_again.ckpt")
    assert load_weights(tmp_path / "seed_again.ckpt").metadata["act_layer"] == "gelu_tanh"
