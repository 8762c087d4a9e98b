"""Every user mistake ends `twins train` / `twins eval` with exit status 2 and one line on
stderr that names the problem and the fix; no traceback."""

from __future__ import annotations

import shutil

import pytest
import torch

from twins import create_model
from twins.cli.main import main
from twins.tasks import fit
from twins.train import save_config


@pytest.fixture(scope="module")
def files(imagefolder, tiny_config, make_imagefolder, tmp_path_factory):
    """A recipe, a finished tiny run, weights of another model and a file that is no weights."""
    folder = tmp_path_factory.mktemp("refusals")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = tiny_config(imagefolder, folder / "run", epochs=1, warmup_length=0)
    save_config(config, folder / "recipe.yaml")
    fit(config)
    torch.set_num_threads(threads)
    other = create_model(
        "svt_small", num_classes=4, embed_dims=(16, 32, 64, 128), depths=(2, 2, 2, 2)
    )
    torch.save(other.state_dict(), folder / "svt.pth")
    (folder / "notes.pt").write_bytes(b"these are not weights")
    make_imagefolder(folder / "only_train", 2, [0, 0, 0, 0])
    shutil.rmtree(folder / "only_train" / "val")
    (folder / "broken.yaml").write_text("epochs: [1\n")
    return folder


def refusal(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("twins: error: ") and "Traceback" not in captured.err
    return lines[0]


# (argument list after `train -c recipe.yaml`, words the message must hold: problem, then fix)
TRAIN_MISTAKES = {
    "unknown key": (["lr=0.1"], ["unknown config key 'lr'", "did you mean base_lr"]),
    "unknown key, other tool's name": (["warmup_epochs=3"], ["did you mean warmup_length"]),
    "ill-typed value": (["epochs=ten"], ["epochs='ten' is not an integer", "give epochs"]),
    "ill-typed flag": (["with_ema=maybe"], ["not true or false"]),
    "value out of range": (["re_prob=1.5"], ["re_prob=1.5 is out of range", "0.0 .. 1.0"]),
    "negative limit": (["max_nonfinite_steps=-1"], ["out of range", ">= 0"]),
    "value not among choices": (["optimizer=adam"], ["optimizer='adam'", "adamw, sgd"]),
    "keys that contradict": (["warmup_length=5"], ["exceeds epochs", "shorten"]),
    "batch larger than data": (["batch_size=100"], ["no full batch", "lower batch_size"]),
    "odd batch with mixup": (["batch_size=7", "mix_up=0.8"], ["even batch_size"]),
    "unknown model": (["arch=pcpvt_tiny"], ["unknown model 'pcpvt_tiny'", "choose one of"]),
    "unknown model argument": (["model_args.depth=[1,1,1,1]"], ["depth", "valid ones"]),
    "class count mismatch": (["num_classes=5"], ["4 class folders", "set num_classes=4"]),
    "bad augmentation string": (["auto_augment=autoaug"], ["not a timm", "rand-m9"]),
}


@pytest.mark.parametrize("mistake", TRAIN_MISTAKES)
def test_train_refuses_a_mistake_in_one_line(files, capsys, tmp_path, mistake):
    overrides, words = TRAIN_MISTAKES[mistake]
    recipe = ["-c", str(files / "recipe.yaml"), "--output", str(tmp_path / "new")]
    message = refusal(capsys, ["train", *recipe, *overrides])
    for word in words:
        assert word in message
    assert not (tmp_path / "new").exists()  # a refused start leaves no output folder behind


def test_train_refuses_missing_or_broken_inputs(files, capsys, tmp_path):
    recipe = ["-c", str(files / "recipe.yaml"), "--output", str(tmp_path / "new")]
    message = refusal(capsys, ["train", "-c", str(tmp_path / "missing.yaml")])
    assert "not found" in message and "-c" in message
    message = refusal(capsys, ["train", "-c", str(files / "run")])
    assert f"{files / 'run'} is a folder, not a config file" in message
    assert f"{files / 'run' / 'config.yaml'}" in message and "(command line: --config)" in message
    message = refusal(capsys, ["train", "-c", str(files / "broken.yaml")])
    assert "not valid YAML" in message and "line" in message
    message = refusal(capsys, ["train", *recipe, "--data", str(tmp_path / "nowhere")])
    assert "not found" in message and "set data_url" in message and "--data" in message
    message = refusal(capsys, ["train", *recipe, "--data", str(files / "only_train")])
    assert "val" in message and "--data" in message
    message = refusal(capsys, ["train", *recipe, f"pretrained={files / 'notes.pt'}"])
    assert "not a weights file" in message
    message = refusal(capsys, ["train", *recipe, f"pretrained={files / 'svt.pth'}"])
    assert "do not fit pcpvt_small" in message and "the file was made for" in message
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder the user made stays, without a lock file
    kept.mkdir()
    refusal(
        capsys, ["train", "-c", str(files / "recipe.yaml"), "--output", str(kept), "num_classes=5"]
    )
    assert list(kept.iterdir()) == []


def test_train_refuses_an_output_folder_inside_the_data_set(files, capsys, make_imagefolder):
    data = make_imagefolder(files / "data", 2, [1, 1, 1, 1])
    before = sorted(data.rglob("*"))
    recipe = ["train", "-c", str(files / "recipe.yaml"), "--data", str(data)]
    message = refusal(capsys, [*recipe, "--output", str(data / "train")])
    assert f"is inside the data set's train/ folder {data / 'train'}" in message
    assert message.endswith("(command line: --output)")
    message = refusal(capsys, [*recipe, "--output", str(data / "val" / "class_0" / "run")])
    assert "is inside the data set's val/ folder" in message
    assert sorted(data.rglob("*")) == before  # nothing written into the data set


def test_train_refuses_an_output_folder_of_another_model(files, capsys):
    recipe = ["-c", str(files / "recipe.yaml"), "--output", str(files / "run")]
    message = refusal(capsys, ["train", *recipe, "model_args.depths=[2,1,1,1]"])
    assert "is a run with model_args" in message and "another output folder" in message


def test_eval_refuses_wrong_or_missing_checkpoints(files, capsys, imagefolder):
    recipe = ["eval", "-c", str(files / "recipe.yaml"), "--data", str(imagefolder)]
    message = refusal(capsys, [*recipe, "--checkpoint", str(files / "missing.pt")])
    assert "no such file" in message
    message = refusal(capsys, [*recipe, "--checkpoint", str(files / "notes.pt")])
    assert "not a weights file" in message
    # A plain state dict of another model, read as the config's arch.
    message = refusal(capsys, [*recipe, "--checkpoint", str(files / "svt.pth")])
    assert "do not fit pcpvt_small" in message and "set arch" in message
    best = str(files / "run" / "checkpoints" / "best.pt")
    message = refusal(capsys, [*recipe, "--checkpoint", best, "num_classes=3"])
    assert "classify 4 classes" in message and "set num_classes=4" in message
    message = refusal(capsys, [*recipe, "--checkpoint", best, "--data", str(files)])
    assert "val" in message and "--data" in message
