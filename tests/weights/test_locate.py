"""Weights named by `hf-hub:` id (an offline Hub cache laid out as huggingface_hub lays it
out), by `s3://` URL (a real S3 server) and as a Hub-layout folder, through the one resolver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import twins
from hub_cache import add_to_hub_cache
from twins import storage
from twins.cli.main import main
from twins.cli.options import HUB_WEIGHT_FILES
from twins.errors import TwinsError
from twins.weights import StateDict, load_weights, local_weights_file, model_metadata, save_weights
from twins.weights.locate import WEIGHT_FILES

TINY = {"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}


@pytest.fixture
def tiny(tmp_path):
    """(model, the bytes of its safetensors file with its metadata)."""
    torch.manual_seed(0)
    model = twins.create_model("pcpvt_small", num_classes=3, **TINY)
    path = tmp_path / "tiny.safetensors"
    save_weights(StateDict(model.state_dict(), model_metadata(model, ["a", "b", "c"])), path)
    return model, path.read_bytes()


def same_weights(weights, expected) -> None:
    """`weights` hold every tensor of `expected` (a model or a state dict), exactly."""
    expected = expected.state_dict() if isinstance(expected, torch.nn.Module) else expected
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0)


def test_the_cli_keeps_the_hub_weight_files():
    assert HUB_WEIGHT_FILES == WEIGHT_FILES


def test_a_cached_hub_id_is_read_offline(tiny, offline_hub_cache):
    model, data = tiny
    add_to_hub_cache(offline_hub_cache, "someone/tiny-twins", {"model.safetensors": data})
    folder = local_weights_file("hf-hub:someone/tiny-twins")
    assert folder.parent.parent.name == "models--someone--tiny-twins"  # the snapshot, not a copy
    weights = load_weights("hf-hub:someone/tiny-twins")
    same_weights(weights, model)
    assert weights.metadata["class_names"] == ["a", "b", "c"]
    loaded = twins.load_model("hf-hub:someone/tiny-twins")
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(images), model.eval()(images))


def test_a_revision_picks_its_snapshot(tiny, offline_hub_cache):
    model, data = tiny
    other = twins.create_model("pcpvt_small", num_classes=3, **TINY)
    buffer = offline_hub_cache.parent / "other.safetensors"
    save_weights(StateDict(other.state_dict(), model_metadata(other)), buffer)
    add_to_hub_cache(offline_hub_cache, "someone/tiny-twins", {"model.safetensors": data})
    add_to_hub_cache(
        offline_hub_cache, "someone/tiny-twins", {"model.safetensors": buffer.read_bytes()}, "v2"
    )
    same_weights(load_weights("hf-hub:someone/tiny-twins"), model)
    same_weights(load_weights("hf-hub:someone/tiny-twins@v2"), other)


def test_timm_config_json_describes_bare_weights(tiny, offline_hub_cache):
    """timm's own repositories: bare tensors, the model and labels in config.json."""
    model, _ = tiny
    bare = offline_hub_cache.parent / "bare.safetensors"
    save_weights(StateDict(model.state_dict()), bare)
    config = {
        "architecture": "twins_pcpvt_small",
        "num_classes": 3,
        "label_names": ["x", "y", "z"],
        "model_args": {"embed_dims": TINY["embed_dims"], "depths": TINY["depths"]},
        "pretrained_cfg": {"input_size": [3, 96, 96], "crop_pct": 0.875, "mean": [0.5] * 3},
    }
    files = {"model.safetensors": bare.read_bytes(), "config.json": json.dumps(config).encode()}
    add_to_hub_cache(offline_hub_cache, "timm/tiny", files)
    loaded = twins.load_model("hf-hub:timm/tiny")
    assert list(loaded.pretrained_cfg["label_names"]) == ["x", "y", "z"]
    assert loaded.pretrained_cfg["input_size"] == (3, 96, 96)
    assert loaded.pretrained_cfg["crop_pct"] == 0.875
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(images), model.eval()(images))


def test_an_uncached_id_offline_is_one_line(offline_hub_cache):
    with pytest.raises(TwinsError) as caught:
        load_weights("hf-hub:someone/not-cached@v1")
    message = str(caught.value)
    assert "\n" not in message and "hf-hub:someone/not-cached@v1" in message
    assert "HF_HUB_OFFLINE" in message and "HF_ENDPOINT" in message
    with pytest.raises(TwinsError, match="not a Hub id"):
        load_weights("hf-hub:no-organisation")


READ_TWO_IDS = """
from twins.errors import TwinsError
from twins.weights import load_weights
print(sorted(load_weights("hf-hub:someone/tiny-twins").metadata["class_names"]))
try:
    load_weights("hf-hub:someone/elsewhere")
except TwinsError as error:
    print(error)
"""


def test_the_hub_variables_are_honoured_by_a_fresh_process(tiny, tmp_path):
    """HF_HUB_OFFLINE and HF_HUB_CACHE as a user sets them, read by huggingface_hub at import."""
    _, data = tiny
    cache = tmp_path / "cache"
    add_to_hub_cache(cache, "someone/tiny-twins", {"model.safetensors": data})
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    environment["PYTHONPATH"] = os.pathsep.join(sys.path)
    command = [sys.executable, "-c", READ_TWO_IDS]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found, refused = done.stdout.strip().splitlines()
    assert found == "['a', 'b', 'c']"
    assert "hf-hub:someone/elsewhere" in refused and "HF_HUB_OFFLINE" in refused


def test_a_hub_layout_folder_is_weights(tiny, tmp_path):
    model, data = tiny
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(data)
    same_weights(load_weights(folder), model)
    with pytest.raises(TwinsError, match="without model.safetensors or pytorch_model.bin"):
        load_weights(tmp_path)


def test_s3_weights_are_cached_until_the_object_changes(tiny, s3_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    model, data = tiny
    url = storage.join(s3_prefix, "tiny.safetensors")
    storage.write_bytes(url, data)
    same_weights(load_weights(url), model)
    local = local_weights_file(url)
    assert local.read_bytes() == data and local.is_relative_to(tmp_path / "cache" / "weights")
    first = local.stat().st_mtime_ns
    local_weights_file(url)
    assert local.stat().st_mtime_ns == first  # the cached copy is current: not fetched again
    other = twins.create_model("pcpvt_small", num_classes=3, **TINY)
    save_weights(StateDict(other.state_dict(), model_metadata(other)), tmp_path / "o.safetensors")
    storage.put_file(tmp_path / "o.safetensors", url)
    same_weights(load_weights(url), other)  # replaced in the store: fetched again


def test_an_s3_hub_folder_and_obs_urls(tiny, s3_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    model, data = tiny
    folder = storage.join(s3_prefix, "repo")
    storage.write_bytes(storage.join(folder, "model.safetensors"), data)
    same_weights(load_weights(folder), model)
    same_weights(load_weights("obs://" + folder[len("s3://") :]), model)


def test_an_s3_checkpoint_behind_a_wrong_secret_is_one_line(
    tiny, s3_env, s3_prefix, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TWINS_CACHE_DIR", str(cache))
    url = storage.join(s3_prefix, "tiny.safetensors")
    storage.write_bytes(url, tiny[1])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3_env.secret)
    with pytest.raises(TwinsError) as caught:
        load_weights(url)
    message = str(caught.value)
    assert "\n" not in message and "tiny.safetensors" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]  # nothing half
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    with pytest.raises(TwinsError, match="no such file or object"):
        load_weights(storage.join(s3_prefix, "missing.safetensors"))


def test_every_reader_takes_a_url(tiny, s3_prefix, tmp_path, monkeypatch):
    """convert's source and a dense model's `pretrained=` go through the same resolver."""
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    model, data = tiny
    url = storage.join(s3_prefix, "tiny.safetensors")
    storage.write_bytes(url, data)
    from twins.convert import convert

    convert(url, tmp_path / "copy.pth")
    same_weights(load_weights(tmp_path / "copy.pth"), model)
    twins.create_model(
        "retinanet_pcpvt_small",
        pretrained=url,
        num_classes=2,
        num_heads=[1, 2, 5, 8],
        min_size=64,
        max_size=96,
        **TINY,
    )


def test_a_missing_local_file_still_says_so(tmp_path):
    with pytest.raises(TwinsError, match="no such file"):
        load_weights(Path(tmp_path / "nothing.pth"))


def test_predict_and_export_take_a_hub_id(tiny, offline_hub_cache, tmp_path, capsys):
    from PIL import Image

    model, data = tiny
    add_to_hub_cache(offline_hub_cache, "someone/tiny-twins", {"model.safetensors": data})
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    checkpoint = ["--checkpoint", "hf-hub:someone/tiny-twins"]
    assert main(["predict", *checkpoint, str(tmp_path / "red.png"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["predictions"][0]["top"][0]["label"] in ["a", "b", "c"]
    folder = tmp_path / "hf"
    assert main(["export", *checkpoint, "--format", "hf", "-o", str(folder)]) == 0
    same_weights(load_weights(folder), model)


def test_predict_out_records_the_model_of_a_hub_id_and_a_hub_folder(
    tiny, offline_hub_cache, tmp_path
):
    """`--out` names its model by the sha256 of what holds it: the id's cached file, a folder's
    files; another model on the same file is refused."""
    from PIL import Image

    _, data = tiny
    add_to_hub_cache(offline_hub_cache, "someone/tiny-twins", {"model.safetensors": data})
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    image = str(tmp_path / "red.png")
    by_id = ["predict", "--checkpoint", "hf-hub:someone/tiny-twins", image]
    assert main([*by_id, "--out", str(tmp_path / "id.jsonl")]) == 0
    folder = tmp_path / "hf"
    assert main(["export", *by_id[1:3], "--format", "hf", "-o", str(folder)]) == 0
    by_folder = ["predict", "--checkpoint", str(folder), image]
    assert main([*by_folder, "--out", str(tmp_path / "folder.jsonl")]) == 0
    rows = [(tmp_path / n).read_text() for n in ("id.jsonl", "folder.jsonl")]
    assert rows[0] == rows[1] and '"label"' in rows[0]
    # the folder's model.safetensors carries more metadata than the id's file: another model
    assert main([*by_folder, "--out", str(tmp_path / "id.jsonl")]) == 2
