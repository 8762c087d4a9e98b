"""`evaluate_checkpoint` builds the model the weights describe, else the config's arch and
model_args over the shapes of the tensors (head counts leave no trace in weights)."""

import json

import pytest
import torch
import yaml

from factories import write_imagefolder
from twins import create_model
from twins.cli.main import main
from twins.errors import TwinsError
from twins.tasks import evaluate_checkpoint
from twins.weights.mindspore_layout import to_mindspore
from twins.weights.mindspore_proto import write_tags

# pcpvt_small's own heads (1, 2, 5, 8) do not divide these widths, as with the demo's.
CUSTOM = {"embed_dims": [16, 32, 64, 128], "num_heads": [1, 2, 4, 8], "depths": [1, 1, 1, 1]}


def test_bare_weights_of_a_custom_model_use_the_config_model_args(
    imagefolder, tiny_config, tmp_path
):
    torch.manual_seed(0)
    model = create_model("pcpvt_small", num_classes=4, **CUSTOM)
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)  # an official-style file: tensors only
    described = tmp_path / "described.pt"
    meta = {"arch": "pcpvt_small", "model_args": model.model_args, "num_classes": 4}
    torch.save({"format": "twins-checkpoint", "model": model.state_dict(), "meta": meta}, described)

    config = tiny_config(imagefolder, tmp_path / "run", model_args=CUSTOM)
    from_bare = evaluate_checkpoint(config, bare)
    from_described = evaluate_checkpoint(config, described)
    assert from_bare["images"] == 14
    for key in ("top1", "top5", "loss"):
        assert from_bare[key] == from_described[key]

    # Without the config's num_heads the file cannot be rebuilt: say which argument to set.
    config = tiny_config(imagefolder, tmp_path / "run", model_args={"depths": [1, 1, 1, 1]})
    with pytest.raises(TwinsError, match="num_heads") as error:
        evaluate_checkpoint(config, bare)
    assert error.value.argument == "model_args" and "from the config" in str(error.value)


def test_eval_arch_tells_the_family_of_a_mindspore_file_that_cannot(imagefolder, tmp_path, capsys):
    """Without spatial reduction a .ckpt's q/k/v do not say whether they are SVT's (joined
    into qkv) or PCPVT's (q and kv): `twins eval --arch` says it, as for convert and predict."""
    shape = {"embed_dims": [16, 32, 64, 128], "depths": [2, 2, 2, 2], "sr_ratios": [1, 1, 1, 1]}
    model = create_model("svt_small", num_classes=4, act_layer="gelu_tanh", **shape)
    ckpt = tmp_path / "svt.ckpt"
    write_tags(to_mindspore(model.state_dict()), ckpt)  # as the seed writes it: tensors only
    recipe = tmp_path / "recipe.yaml"
    config = {"arch": "pcpvt_small", "model_args": shape, "num_classes": 4, "image_size": 32,
              "batch_size": 8, "num_parallel_workers": 0, "device_target": "CPU"}  # fmt: skip
    recipe.write_text(yaml.safe_dump(config))
    argv = ["eval", "-c", str(recipe), "--checkpoint", str(ckpt), "--data", str(imagefolder)]
    assert main([*argv, "--json"]) == 2  # read as the recipe's PCPVT, which it is not
    (line,) = capsys.readouterr().err.splitlines()
    assert "do not fit" in line and "set arch and model_args" in line
    assert main([*argv, "--arch", "svt_small", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "svt_small" and result["images"] == 14


def test_eval_says_which_images_it_skipped_for_any_task(tmp_path, tiny_config):
    """A classifier's pass, through the one evaluation driver: an empty file in val/ is left
    out, counted and named."""
    data = write_imagefolder(tmp_path / "data")
    broken = sorted((data / "val").rglob("*.*"))[0]
    broken.write_bytes(b"")
    torch.manual_seed(0)
    model = create_model("pcpvt_small", num_classes=4, **CUSTOM)
    weights = tmp_path / "bare.pth"
    torch.save(model.state_dict(), weights)
    result = evaluate_checkpoint(tiny_config(data, tmp_path / "run", model_args=CUSTOM), weights)
    assert result["images"] == 13
    assert result["skipped"] == {"count": 1, "files": [str(broken)]}
