"""The run's record: run.log holds what the run printed, appended across resumes; run.json, each
checkpoint and the model `load_model` gives back say what made the run; both go up to a bucket
output (a real S3 server), a packed data set named by its manifest's hash."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys

import torch
import torchvision

from factories import TINY_MODEL
from twins import create_model, load_model, storage
from twins.data.packed.writer import pack
from twins.environment import source_commit
from twins.tasks import fit
from twins.train.resume import load_checkpoint


def test_run_log_holds_the_printed_lines_and_a_resume_appends(
    imagefolder, tiny_config, tmp_path, capsys
):
    config = tiny_config(imagefolder, tmp_path / "run", epochs=2)
    fit(config, stop_after_epoch=1)
    first = capsys.readouterr().out
    log = tmp_path / "run" / "run.log"
    assert "epoch 1/2" in first and first.splitlines()[-1].startswith("done:")
    assert log.read_text() == first  # every line, as printed

    fit(config)
    second = capsys.readouterr().out
    assert "resuming from" in second and "epoch 2/2" in second
    lines = log.read_text().splitlines(keepends=True)
    marker = lines[len(first.splitlines())]
    assert re.fullmatch(r"=== \S+: resumed after epoch 1, at step 4 ===\n", marker)
    assert "".join(lines) == first + marker + second


def test_run_log_holds_the_warnings_of_the_data(make_imagefolder, tiny_config, tmp_path):
    data = make_imagefolder(tmp_path / "data", 16, [5, 4, 3, 2])
    (data / "train" / "class_0" / "empty.png").write_bytes(b"")
    fit(tiny_config(data, tmp_path / "run", epochs=1, batch_size=5))
    log = (tmp_path / "run" / "run.log").read_text()
    assert re.search(r"^skipping unreadable image .*empty\.png", log, re.M)


def test_a_program_routing_the_lines_gets_them_and_run_log_still_does(
    imagefolder, tiny_config, tmp_path, capsys
):
    routed: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: routed.append(record.getMessage())
    logging.getLogger("twins").addHandler(handler)
    try:
        fit(tiny_config(imagefolder, tmp_path / "run", epochs=1))
    finally:
        logging.getLogger("twins").removeHandler(handler)
    assert capsys.readouterr().out == ""  # the program's handler takes the lines instead
    logged = (tmp_path / "run" / "run.log").read_text().splitlines()
    assert routed == logged and routed[-1].startswith("done:")


def test_run_json_and_every_checkpoint_say_what_made_the_run(imagefolder, tiny_config, tmp_path):
    output = tmp_path / "run"
    config = tiny_config(imagefolder, output, epochs=2, seed=3)
    fit(config, stop_after_epoch=1)
    fit(config)
    record = json.loads((output / "run.json").read_text())
    assert record["command"].startswith(sys.argv[0])
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["torchvision"] == torchvision.__version__
    assert {"python", "timm", "twins", "cuda", "cudnn"} <= record["versions"].keys()
    assert record["device"] == "cpu" and record["world_size"] == 1
    assert record["gpus"]["count"] == len(record["gpus"]["names"])
    assert record["cpu"]
    assert record["commit"] == source_commit()  # the tests run from a checkout
    assert record["data"]["images"] == {"train": 64, "val": 14}
    assert record["seed"] == 3
    assert record["resumed_at"] == {"epoch": 1, "step": 4}
    (earlier,) = record.pop("earlier")
    assert earlier["resumed_at"] is None and earlier["started"] <= record["started"]

    # Each checkpoint carries the record of the start that wrote it.
    for name in ("last.pt", "epoch_0002.pt"):
        assert load_checkpoint(output / "checkpoints" / name)["meta"]["run"] == record
    assert load_checkpoint(output / "checkpoints" / "epoch_0001.pt")["meta"]["run"] == earlier
    best = load_checkpoint(output / "checkpoints" / "best.pt")
    assert best["meta"]["run"] == (record if best["epoch"] == 2 else earlier)
    assert load_model(output / "checkpoints" / "last.pt").run_record == record


def test_a_model_from_weights_no_run_made_has_no_run_record(tmp_path):
    model = create_model("pcpvt_small", num_classes=4, **TINY_MODEL)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    assert (
        load_model(tmp_path / "plain.pth", arch="pcpvt_small", model_args=TINY_MODEL).run_record
        is None
    )


def test_the_record_goes_up_to_a_bucket_output_with_the_packed_data_named(
    imagefolder, tiny_config, s3_prefix, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    data, output = storage.join(s3_prefix, "data"), storage.join(s3_prefix, "run")
    pack(imagefolder, data, workers=1)
    capsys.readouterr()
    fit(tiny_config(data, output, epochs=1))
    printed = capsys.readouterr().out
    assert storage.read_bytes(storage.join(output, "run.log")).decode() == printed
    record = json.loads(storage.read_bytes(storage.join(output, "run.json")))
    manifest = storage.read_bytes(storage.join(data, "manifest.json"))
    assert record["data"] == {
        "url": storage.display(data),
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
    }
