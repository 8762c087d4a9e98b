"""W&B in offline mode (`WANDB_MODE=offline`, `WANDB_DIR` in tmp): the run's local files, read
back with W&B's own record format, hold every record at its step; after a SIGKILL and a resume
the run's files hold the unbroken run's rows, each step once; a wrong key costs one warning
line, and `twins sync` sends the run later under the id the checkpoint kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from killed_runs import TIMINGS
from mlflow_server import free_port
from twins.tasks import fit
from twins.train import save_config
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint
from twins.train.trackers import scalars
from twins.train.trackers.wandb_file import history, records, run_files

FAULTY_TWINS = Path(__file__).parents[1] / "faulty_twins.py"
# 8 steps in one epoch, a checkpoint every 3 steps, every step logged: a kill at step 6 comes
# after steps 4 and 5 were sent, and the resumed run goes on from step 3.
RECIPE = {"batch_size": 8, "epochs": 1, "save_every_steps": 3, "log_every": 1, "with_ema": True}
RECIPE |= {"mix_up": 0.8, "cutmix": 1.0, "drop_path_rate": 0.1}
W_AND_B_KEYS = ("_step", "_runtime", "_timestamp")


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Iterator[Path]:
    folder = tmp_path / "wandb_dir"
    folder.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(folder))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield folder
    # W&B keeps its settings and background service for the whole process, and names the
    # service in WANDB_SERVICE for child processes to share: each test starts afresh.
    import wandb

    wandb.teardown()
    os.environ.pop("WANDB_SERVICE", None)


def expected_rows(output: Path) -> dict[int, dict[str, float]]:
    """The rows metrics.jsonl says W&B holds: each step's scalars, timings left out."""
    rows: dict[int, dict[str, float]] = {}
    for record in read_metrics(output / "metrics.jsonl"):
        rows.setdefault(record["step"], {}).update(scalars(record))
    return {step: without_timings(row) for step, row in rows.items()}


def without_timings(row: dict) -> dict:
    return {
        k: v for k, v in row.items() if k not in W_AND_B_KEYS and k.split("/")[-1] not in TIMINGS
    }


def held_rows(wandb_dir: Path, run_id: str) -> dict[int, dict[str, float]]:
    """The rows of every local file of the run (one per start), each step once."""
    rows = [row for path in run_files(wandb_dir, run_id) for row in history(path)]
    steps = [row["_step"] for row in rows]
    assert len(steps) == len(set(steps)), f"steps sent twice: {steps}"
    return {row["_step"]: without_timings(row) for row in rows}


def test_an_offline_run_holds_every_record_and_the_files(
    offline, imagefolder, tiny_config, tmp_path
):
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, loggers=["wandb"], wandb_project="twins-tests"))
    run_id = load_checkpoint(output / "checkpoints" / "last.pt")["trackers"]["wandb"]
    (path,) = run_files(offline, run_id)
    assert held_rows(offline, run_id) == expected_rows(output)
    assert {p.name for p in (path.parent / "files").iterdir()} >= {"config.yaml", "curves.png"}
    assert not (output / "tensorboard").exists()


def test_the_record_reader_stops_at_a_record_cut_short(offline, imagefolder, tiny_config, tmp_path):
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, loggers=["wandb"], epochs=1))
    run_id = load_checkpoint(output / "checkpoints" / "last.pt")["trackers"]["wandb"]
    (path,) = run_files(offline, run_id)
    whole = list(records(path))
    path.write_bytes(path.read_bytes()[:-3])  # a kill half way through the last record
    assert list(records(path)) == whole[:-1]


def run_cli(recipe: Path, **fault: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"OMP_NUM_THREADS": "1"}
    env.update({f"TWINS_{key.upper()}": str(value) for key, value in fault.items()})
    command = [sys.executable, str(FAULTY_TWINS), "train", "-c", str(recipe)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
    )


def test_after_a_sigkill_and_a_resume_wandb_holds_the_unbroken_rows(
    offline, imagefolder, tiny_config, tmp_path
):
    """Offline, W&B may lose in a kill all it had not written yet; the resumed run sends what
    the run's files lack of the steps up to its checkpoint from metrics.jsonl, then its own,
    and the files of the run's two starts hold each step once, as the unbroken run has them."""
    fit(tiny_config(imagefolder, tmp_path / "unbroken", **RECIPE))
    output = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, output, loggers=["wandb"], **RECIPE), recipe)
    killed = run_cli(recipe, kill_at_step=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = load_checkpoint(output / "checkpoints" / "last.pt")["trackers"]["wandb"]
    finished = run_cli(recipe)
    assert finished.returncode == 0, finished.stderr
    assert len(run_files(offline, run_id)) == 2  # the same run, started twice
    assert held_rows(offline, run_id) == expected_rows(tmp_path / "unbroken")


def test_a_wrong_key_costs_one_line_and_sync_sends_the_run_later(
    offline, imagefolder, tiny_config, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "wrong")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, loggers=["tensorboard", "wandb"], epochs=1))
    warnings = [line for line in capsys.readouterr().out.splitlines() if "W&B" in line]
    assert len(warnings) == 1 and "check WANDB_API_KEY" in warnings[0], warnings
    run_id = load_checkpoint(output / "checkpoints" / "last.pt")["trackers"]["wandb"]
    assert run_files(offline, run_id) == []
    # Later, in a process of its own as a user would run it: offline this time.
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert sync_cli(output).returncode == 0
    assert held_rows(offline, run_id) == expected_rows(output)
    again = sync_cli(output)
    assert again.returncode == 0 and " 0 of " in again.stdout, again.stdout
    assert held_rows(offline, run_id) == expected_rows(output)


def sync_cli(output: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    command = [sys.executable, "-m", "twins", "sync", str(output), "--to", "wandb"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
