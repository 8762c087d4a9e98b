"""`twins convert`: every direction between .pth, .ckpt and .safetensors, through the CLI."""

import numpy as np
import pytest
import torch

import twins
from seed_models import tiny_model
from twins.cli.main import main
from twins.convert import convert
from twins.weights import load_weights
from twins.weights.mindspore import read_mindspore


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
    tags = read_mindspore(ckpt)
    assert "model.blocks.0.0.attn.k.weight" in tags and "model.norm.gamma" in tags
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(ckpt), str(back), "--arch", "svt_small"]) == 0
    weights = load_weights(back)
    assert weights.metadata["arch"] == "svt_small" and weights.metadata["num_classes"] == 4
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    pth_again = tmp_path / "again.pth"
    assert main(["convert", str(back), str(pth_again)]) == 0
    assert "not stored: act_layer, arch" in capsys.readouterr().err
    assert set(torch.load(pth_again, weights_only=True)) == set(model.state_dict())


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
