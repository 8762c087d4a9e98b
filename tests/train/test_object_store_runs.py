"""Runs whose data and output both live in an object store (a real SeaweedFS S3 server): a run
killed and resumed ends with the unbroken run's checkpoint in the bucket, bit for bit, also with
other loader worker counts and (slow) under torchrun killed at random steps; a wrong secret is
one line from `twins train` and `twins pack`; the seed's recipe runs on obs:// URLs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factories import EVERY_RANDOM_DRAW, TINY_MODEL
from killed_runs import fit_killed_at_step
from twins import storage
from twins.cli.main import main
from twins.data.packed.writer import pack
from twins.tasks import fit
from twins.train import save_config
from twins.train.resume import load_checkpoint

CONFIGS = Path(__file__).parents[2] / "configs"
FAULTY_TWINS = Path(__file__).with_name("faulty_twins.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
SHARD_SIZE = 20_000  # 16 training shards of the 64 training images
# Every source of randomness on; 2 epochs of 8 steps, a checkpoint every 3.
RECIPE = EVERY_RANDOM_DRAW | {"cooldown_epochs": 0, "batch_size": 8, "save_every_steps": 3}
RECIPE |= {"shuffle_block": 2}


@pytest.fixture
def bucket(s3_prefix, monkeypatch) -> str:
    """A fresh prefix; retries as long as a loaded test machine needs."""
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", "60")
    return s3_prefix


def last_checkpoint(url: str, local: Path) -> dict:
    """`checkpoints/last.pt` as read back from the bucket."""
    storage.get_file(storage.join(url, "checkpoints", "last.pt"), local)
    return load_checkpoint(local)


def assert_same_state(a: dict, b: dict) -> None:
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    optimizer_a, optimizer_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert optimizer_a.keys() == optimizer_b.keys()
    for index, state in optimizer_a.items():
        for name, value in state.items():
            other = optimizer_b[index][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other


def test_a_killed_run_resumed_elsewhere_ends_in_the_bucket_as_the_unbroken_run(
    imagefolder, bucket, tiny_config, tmp_path, monkeypatch
):
    data, unbroken, run = (storage.join(bucket, name) for name in ("data", "unbroken", "run"))
    pack(imagefolder, data, shard_size=SHARD_SIZE, workers=1)
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "machine-a"))
    fit(tiny_config(data, unbroken, **RECIPE, num_parallel_workers=0))

    config = tiny_config(data, run, **RECIPE, num_parallel_workers=2)
    fit_killed_at_step(config, 11)  # within epoch 2, after its checkpoint of step 9
    assert last_checkpoint(run, tmp_path / "killed.pt")["global_step"] == 9
    # Another machine: no staging folder, no shard cache; everything comes from the bucket.
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "machine-b"))
    result = fit(config)
    assert result["epoch"] == 2
    a = last_checkpoint(unbroken, tmp_path / "a.pt")
    b = last_checkpoint(run, tmp_path / "b.pt")
    assert a["global_step"] == b["global_step"] == 16
    assert_same_state(a, b)
    assert storage.read_bytes(storage.join(run, "checkpoints", "LATEST"))


def twins_command(*arguments: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twins", *arguments],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_wrong_secret_is_one_line_from_train_and_from_pack(imagefolder, bucket, tmp_path):
    pack(imagefolder, storage.join(bucket, "data"), shard_size=SHARD_SIZE, workers=1)
    wrong = {"AWS_SECRET_ACCESS_KEY": "not-the-secret", "TWINS_STORAGE_RETRY_SECONDS": "2"}
    tiny = ["num_classes=4", "image_size=32", "epochs=1", "warmup_length=0", "cooldown_epochs=0"]
    tiny += ["device_target=CPU", "num_parallel_workers=0"]
    train = twins_command(
        "train",
        "-c",
        str(CONFIGS / "pcpvt_small.yaml"),
        "--data",
        storage.join(bucket, "data"),
        "--output",
        storage.join(bucket, "run"),
        *tiny,
        **wrong,
    )
    packing = twins_command(
        "pack", str(imagefolder), storage.join(bucket, "packed"), "--workers", "1", **wrong
    )
    for done in (train, packing):
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "AWS_SECRET_ACCESS_KEY" in lines[0] and "not-the-secret" not in lines[0]
    assert not storage.list_files(storage.join(bucket, "packed"))


def test_the_seed_recipe_runs_with_obs_urls_as_on_modelarts(
    imagefolder, bucket, tmp_path, monkeypatch, capsys
):
    obs = "obs://" + bucket.removeprefix("s3://")
    pack(imagefolder, storage.join(bucket, "data"), shard_size=SHARD_SIZE, workers=1)
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    sized = "num_classes=4 image_size=32 batch_size=8 epochs=1 cooldown_epochs=0 warmup_length=0"
    sized += " num_parallel_workers=0 device_target=CPU"
    sized += " model_args.embed_dims=[16,32,40,64] model_args.depths=[1,1,1,1]"
    recipe = ["-c", str(CONFIGS / "twin_s.yaml"), f"data_url={obs}/data", f"train_url={obs}/run"]
    assert main(["train", *recipe, *sized.split()]) == 0
    assert "semantics: seed" in capsys.readouterr().out
    files = storage.list_files(f"{obs}/run")
    assert {"config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/LATEST"} <= set(
        files
    )
    # The same objects through the s3:// name of the bucket.
    assert files == storage.list_files(f"{bucket}/run")
    saved = last_checkpoint(f"{obs}/run", tmp_path / "last.pt")
    assert saved["meta"]["arch"] == "pcpvt_small" and saved["epoch"] == 1


def torchrun_environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        **extra,
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 9 torchrun launches of 2 processes on a loaded machine
def test_torchrun_from_and_to_a_bucket_killed_at_random_steps_ends_as_the_unbroken_run(
    imagefolder, bucket, tmp_path
):
    data = storage.join(bucket, "data")
    packing = twins_command(
        "pack", str(imagefolder), data, "--shard-size", str(SHARD_SIZE), "--workers", "2"
    )
    assert packing.returncode == 0, packing.stderr
    recipe = RECIPE | {"save_every_steps": 2}  # 2 processes × 8: 4 steps per epoch, 8 in all

    def train(output: str, workers: int, **env: str) -> subprocess.CompletedProcess:
        config = tmp_path / f"{output.rsplit('/', 1)[-1]}.yaml"
        save_config(
            make_tiny(data, output, **recipe, num_parallel_workers=workers),
            config,
        )
        command = [*TORCHRUN, "--standalone", "--nproc_per_node=2", str(FAULTY_TWINS)]
        return subprocess.run(
            [*command, "train", "-c", str(config)],
            env=torchrun_environment(TWINS_CACHE_DIR=str(tmp_path / "cache"), **env),
            capture_output=True,
            text=True,
            timeout=600,
        )

    unbroken = train(storage.join(bucket, "unbroken"), 0)
    assert unbroken.returncode == 0, unbroken.stderr
    draw = random.Random(18)
    kills = 0
    for _ in range(8):
        step, rank = draw.randint(1, 4), draw.randint(0, 1)
        done = train(
            storage.join(bucket, "run"),
            2,
            TWINS_KILL_AT_STEP=str(step),
            TWINS_KILL_RANK=str(rank),
        )
        if done.returncode == 0:
            break
        assert "exitcode: -9" in done.stderr, done.stderr
        kills += 1
    else:
        pytest.fail("the run did not finish in 8 launches")
    assert kills >= 2
    a = last_checkpoint(storage.join(bucket, "unbroken"), tmp_path / "a.pt")
    b = last_checkpoint(storage.join(bucket, "run"), tmp_path / "b.pt")
    assert a["global_step"] == b["global_step"] == 8
    assert_same_state(a, b)


def make_tiny(data: str, output: str, **values):
    from factories import make_config

    return make_config(data_url=data, train_url=output, model_args=TINY_MODEL, **values)
