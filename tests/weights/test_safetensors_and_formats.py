"""safetensors with metadata, the format table, and format detection by content rather than by
name."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from seed_models import tiny_model
from twins.cli.main import main
from twins.errors import TwinsError
from twins.weights import StateDict, detect_format, load_weights, save_weights


def test_safetensors_keeps_tensors_and_metadata(tmp_path):
    model = tiny_model("svt", act_layer="gelu_tanh")
    metadata = {
        "arch": "svt_small",
        "model_args": model.model_args,
        "num_classes": 10,
        "act_layer": "gelu_tanh",
        "class_names": [f"n{i}" for i in range(10)],
    }
    path = tmp_path / "svt.safetensors"
    assert save_weights(StateDict(model.state_dict(), metadata), path) == "safetensors"
    weights = load_weights(path)
    assert weights.metadata == {**metadata, "format": "safetensors"}
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_metadata_written_by_other_tools_is_read_as_strings(tmp_path):
    path = tmp_path / "hub.safetensors"
    state_dict = {k: v.contiguous() for k, v in tiny_model("pcpvt").state_dict().items()}
    save_file(state_dict, str(path), metadata={"format": "pt", "arch": "pcpvt_small"})
    assert load_weights(path).metadata == {
        "format": "safetensors",
        "arch": "pcpvt_small",
        "num_classes": 10,
    }


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        (lambda sd, p: save_weights(sd, p.with_suffix(".safetensors")), "safetensors"),
        (lambda sd, p: save_weights(sd, p.with_suffix(".pth")), "torch"),
        (lambda sd, p: save_weights(sd, p.with_suffix(".ckpt")), "mindspore"),
    ],
)
def test_format_is_judged_by_content(tmp_path, writer, expected):
    state_dict = tiny_model("pcpvt").state_dict()
    source = tmp_path / "w"
    writer(state_dict, source)
    written = next(tmp_path.glob("w.*"))
    misnamed = written.rename(tmp_path / "weights.bin")  # the name says nothing
    assert detect_format(misnamed) == expected
    loaded = load_weights(misnamed)
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_files_of_no_known_format_are_refused(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(TwinsError, match="no such file"):
        load_weights(missing)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(TwinsError, match="is empty"):
        load_weights(empty)
    text = tmp_path / "notes.ckpt"
    text.write_text("these are not weights")
    with pytest.raises(TwinsError, match="not a weights file this toolkit reads"):
        load_weights(text)


def test_damaged_safetensors_is_refused(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_weights(tiny_model("pcpvt").state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(TwinsError, match="not a readable safetensors file"):
        load_weights(path)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"]["format"] == "pt"


def test_unknown_destination_extension_is_refused(tmp_path):
    with pytest.raises(TwinsError, match="unknown weights extension '.onnx'"):
        save_weights({"head.weight": torch.zeros(1)}, tmp_path / "model.onnx")


def test_every_written_weights_file_gets_the_same_mode(tmp_path):
    source = tmp_path / "source.pth"
    torch.save(tiny_model("pcpvt").state_dict(), source)
    written = [tmp_path / f"w{suffix}" for suffix in (".safetensors", ".pth", ".ckpt")]
    for path in written:
        assert main(["convert", str(source), str(path)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.suffix: oct(path.stat().st_mode & 0o777) for path in written}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))  # 0o644 under the usual umask
