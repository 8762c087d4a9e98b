"""A run whose output is an S3 URL (SeaweedFS on 127.0.0.1): every file ends up in the bucket,
and a run killed and started again, here or on another machine, ends as the unbroken run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import twins.train.trainer
from factories import EVERY_RANDOM_DRAW
from twins import storage
from twins.tasks import fit
from twins.train import save_config
from twins.train.metrics import read_metrics
from twins.train.mirror import OutputMirror, staging_folder
from twins.train.resume import load_checkpoint

FAULTY_TWINS = Path(__file__).with_name("faulty_twins.py")
# 8 steps per epoch, 2 epochs, a checkpoint every 3 steps: uploads within epochs and at ends.
RECIPE = EVERY_RANDOM_DRAW | {"batch_size": 8, "save_every_steps": 3, "log_every": 2}
RECIPE |= {"epochs": 2, "cooldown_epochs": 0, "save_every": 1, "keep_checkpoint_max": 1}
TIMINGS = ("epoch_seconds", "images_per_s", "output")


class Killed(BaseException):
    """Stands for SIGKILL in the in-process test: nothing in the run catches it."""


@pytest.fixture(scope="module")
def unbroken(imagefolder, tiny_config, tmp_path_factory) -> Path:
    """The output folder of the same run, unbroken, on a local disk."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    output = tmp_path_factory.mktemp("unbroken")
    fit(tiny_config(imagefolder, output, **RECIPE))
    torch.set_num_threads(threads)
    return output


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("TWINS_CACHE_DIR", str(folder))
    return folder


def bucket_checkpoint(url: str, name: str, tmp_path: Path) -> dict:
    local = tmp_path / "from_bucket" / name
    storage.get_file(storage.join(url, "checkpoints", name), local)
    return load_checkpoint(local)


def assert_same_as_unbroken(url: str, unbroken: Path, tmp_path: Path) -> None:
    """The bucket holds the unbroken run's weights, optimizer, EMA and metrics."""
    a = load_checkpoint(unbroken / "checkpoints" / "last.pt")
    b = bucket_checkpoint(url, "last.pt", tmp_path)
    assert b["global_step"] == a["global_step"] and "epoch_progress" not in b
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), name
    metrics = tmp_path / "from_bucket" / "metrics.jsonl"
    storage.get_file(storage.join(url, "metrics.jsonl"), metrics)

    def plain(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(path)]

    assert plain(metrics) == plain(unbroken / "metrics.jsonl")


def test_a_run_writes_its_files_to_the_bucket(
    s3_prefix, s3_env, cache, imagefolder, tiny_config, tmp_path, capsys
):
    url = storage.join(s3_prefix, "run")
    result = fit(tiny_config(imagefolder, url, epochs=1, cooldown_epochs=0, save_every=1))
    assert result["output"] == url

    names = storage.list_files(url)
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "checkpoints/last.pt"):
        assert name in names
    assert {"checkpoints/best.pt", "checkpoints/epoch_0001.pt", "checkpoints/LATEST"} <= set(names)
    assert any(name.startswith("tensorboard/events.out.tfevents") for name in names)
    assert not [name for name in names if ".lock" in name or ".tmp" in name]
    pointer = json.loads(storage.read_bytes(storage.join(url, "checkpoints", "LATEST")))
    assert pointer == {"file": "last.pt", "global_step": 4, "epoch": 1}

    config = yaml.safe_load(storage.read_bytes(storage.join(url, "config.yaml")))
    assert config["train_url"] == url
    assert bucket_checkpoint(url, "last.pt", tmp_path)["config"]["train_url"] == url
    staged = staging_folder(url)
    assert staged.is_relative_to(cache)
    for name in names:  # the bucket holds what the run wrote, and no credential anywhere
        data = storage.read_bytes(storage.join(url, name))
        if name != "checkpoints/LATEST":
            assert data == (staged / name).read_bytes(), name
        assert s3_env.secret.encode() not in data and s3_env.key.encode() not in data
    printed = capsys.readouterr()
    assert f"output in {url}" in printed.out and str(staged) in printed.out
    assert s3_env.secret not in printed.out + printed.err


def test_a_run_killed_where_uploads_failed_uploads_its_newer_files(
    s3_prefix, s3_env, cache, imagefolder, tiny_config, unbroken, tmp_path, monkeypatch, capsys
):
    """The server goes down at step 4, the run dies at step 7 with last.pt of step 6 only on the
    local disk; started again on the same machine, it goes on from step 6 and uploads all."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "0.5")
    url = storage.join(s3_prefix, "run")
    config = tiny_config(imagefolder, url, **RECIPE)
    real_step, calls = twins.train.trainer.optimizer_step, []

    def optimizer_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            s3_env.stop(kill=True)
        if len(calls) == 7:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(twins.train.trainer, "optimizer_step", optimizer_step)
    try:
        with pytest.raises(Killed):
            fit(config)
    finally:
        monkeypatch.setattr(twins.train.trainer, "optimizer_step", real_step)
        s3_env.start()
    assert load_checkpoint(staging_folder(url) / "checkpoints" / "last.pt")["global_step"] == 6
    assert bucket_checkpoint(url, "last.pt", tmp_path)["global_step"] == 3
    # Two uploads failed (the checkpoint of step 6, then at the kill): one warning.
    printed = capsys.readouterr().out
    assert printed.count(f"warning: uploading to {url} failed") == 1, printed
    assert f"the files stay in {staging_folder(url)}" in printed

    fit(config)
    assert "resuming from " + url + "/checkpoints/last.pt within epoch 1 (step 6" in (
        capsys.readouterr().out
    )
    assert_same_as_unbroken(url, unbroken, tmp_path)


def run_cli(recipe: Path, cache: Path, **fault: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TWINS_CACHE_DIR": str(cache)}
    env.update({f"TWINS_{key.upper()}": str(value) for key, value in fault.items()})
    command = [sys.executable, str(FAULTY_TWINS), "train", "-c", str(recipe)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
    )


def test_a_run_killed_and_resumed_on_another_machine_ends_as_the_unbroken_run(
    s3_prefix, s3_env, imagefolder, tiny_config, unbroken, tmp_path
):
    """SIGKILL at step 5 on machine A (the bucket holds step 3); machine B, with nothing of
    the run on its disk, finishes it from the bucket."""
    url = storage.join(s3_prefix, "run")
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, url, **RECIPE), recipe)

    killed = run_cli(recipe, tmp_path / "machine_a", kill_at_step=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert bucket_checkpoint(url, "last.pt", tmp_path)["global_step"] == 3

    finished = run_cli(recipe, tmp_path / "machine_b")
    assert finished.returncode == 0, finished.stderr
    assert f"resuming from {url}/checkpoints/last.pt within epoch 1 (step 3" in finished.stdout
    assert "Traceback" not in finished.stderr
    assert s3_env.secret not in killed.stdout + killed.stderr + finished.stdout + finished.stderr
    assert_same_as_unbroken(url, unbroken, tmp_path)


def test_start_takes_the_newer_of_the_staging_folder_and_the_bucket(
    s3_prefix, s3_env, cache, imagefolder, tiny_config, tmp_path
):
    url = storage.join(s3_prefix, "run")
    fit(tiny_config(imagefolder, url, epochs=1, cooldown_epochs=0))
    staged = staging_folder(url)
    last = staged / "checkpoints" / "last.pt"
    mirror = OutputMirror(url, say=lambda line: None)

    # Killed between last.pt and its pointer: the checkpoints themselves are compared.
    storage.remove(storage.join(url, "checkpoints", "LATEST"))
    before = last.stat().st_mtime_ns
    mirror.pull()
    assert last.stat().st_mtime_ns == before  # the same step: the local copy stays
    assert not list(last.parent.glob(".*"))  # the bucket's copy, compared, is gone

    # Another machine (or a deleted staging folder): the bucket's files come down.
    shutil.rmtree(staged)
    mirror.pull()
    assert last.read_bytes() == storage.read_bytes(storage.join(url, "checkpoints", "last.pt"))
    assert (staged / "metrics.jsonl").is_file() and (staged / "config.yaml").is_file()

    # The bucket's prefix emptied since the run uploaded: the run starts afresh.
    for name in storage.list_files(url):
        storage.remove(storage.join(url, name))
    mirror.pull()
    assert not last.exists() and not (staged / "metrics.jsonl").exists()
