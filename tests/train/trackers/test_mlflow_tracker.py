"""MLflow: a real tracking server (SQLite store, local artifacts) gets a run's params, every
record's metrics and its files; after a SIGKILL and a resume it holds exactly the unbroken run's
history; a server that cannot be reached costs one warning line, and `twins sync` sends later
what it lacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import twins.train.trainer
from killed_runs import TIMINGS
from mlflow_server import MlflowServer, free_port
from twins.cli.main import main
from twins.tasks import fit
from twins.train import save_config
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint
from twins.train.trackers import scalars

FAULTY_TWINS = Path(__file__).parents[1] / "faulty_twins.py"
# 8 steps in one epoch, a checkpoint every 3 steps, a logged step every 2: a kill at step 5 comes
# after step 4 was sent and the checkpoint of step 3 was written.
RECIPE = {"batch_size": 8, "epochs": 1, "save_every_steps": 3, "log_every": 2, "with_ema": True}
RECIPE |= {"mix_up": 0.8, "cutmix": 1.0, "drop_path_rate": 0.1}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


def tracked(server: MlflowServer) -> tuple[dict, str]:
    """Config keys that send a run to `server`, in an experiment of its own."""
    experiment = f"test-{uuid.uuid4().hex[:8]}"
    return {"loggers": ["tensorboard", "mlflow"], "mlflow_tracking_uri": server.uri}, experiment


def expected_history(output: Path) -> dict[str, list[tuple[int, float]]]:
    """What metrics.jsonl says a tracker holds: each record's scalars at its step."""
    history: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(output / "metrics.jsonl"):
        for key, value in scalars(record).items():
            history.setdefault(key, []).append((record["step"], value))
    return {key: sorted(pairs) for key, pairs in history.items()}


def without_timings(history: dict) -> dict:
    return {k: v for k, v in history.items() if k.split("/", 1)[1] not in TIMINGS}


def only_run(server: MlflowServer, experiment: str) -> dict:
    runs = server.runs_of(experiment)
    assert len(runs) == 1, runs
    return runs[0]


def test_a_run_sends_its_params_metrics_and_files(server, imagefolder, tiny_config, tmp_path):
    keys, experiment = tracked(server)
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, mlflow_experiment=experiment, **keys))
    run = only_run(server, experiment)
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["base_lr"] == "0.002" and params["loggers"] == "['tensorboard', 'mlflow']"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["twins_output"] == str(output.resolve())
    assert server.history(run_id) == expected_history(output)
    expected = ["config.yaml", "curves.png", "evaluation.json", "run.json"]
    assert server.artifacts(run_id) == expected
    assert load_checkpoint(output / "checkpoints" / "last.pt")["trackers"] == {"mlflow": run_id}


def run_cli(recipe: Path, **fault: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update({f"TWINS_{key.upper()}": str(value) for key, value in fault.items()})
    command = [sys.executable, str(FAULTY_TWINS), "train", "-c", str(recipe)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
    )


def test_after_a_sigkill_and_a_resume_mlflow_holds_the_unbroken_history(
    server, imagefolder, tiny_config, tmp_path
):
    """Killed at step 5: step 4 was sent, the checkpoint holds step 3. The resumed run goes on
    in the same MLflow run, sends step 4 no second time, and the run's history is the unbroken
    run's, step by step, each step once, the same values."""
    keys, experiment = tracked(server)
    unbroken_keys, unbroken_experiment = tracked(server)
    fit(tiny_config(imagefolder, tmp_path / "unbroken", mlflow_experiment=unbroken_experiment,
                    **RECIPE, **unbroken_keys))  # fmt: skip
    output = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, output, mlflow_experiment=experiment, **RECIPE, **keys),
                recipe)  # fmt: skip
    killed = run_cli(recipe, kill_at_step=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = only_run(server, experiment)["info"]["run_id"]
    assert server.history(run_id)["train/train_loss"][-1][0] == 4  # sent after the checkpoint
    assert load_checkpoint(output / "checkpoints" / "last.pt")["global_step"] == 3
    finished = run_cli(recipe)
    assert finished.returncode == 0, finished.stderr
    assert only_run(server, experiment)["info"]["run_id"] == run_id
    unbroken_id = only_run(server, unbroken_experiment)["info"]["run_id"]
    history = server.history(run_id)
    assert without_timings(history) == without_timings(server.history(unbroken_id))
    assert history == expected_history(output)  # each step once


def test_an_unreachable_server_costs_one_line_and_sync_sends_the_run_later(
    server, imagefolder, tiny_config, tmp_path, monkeypatch, capsys
):
    """The run finishes with its checkpoints; `twins sync` sends what the server lacks, and a
    second sync sends nothing."""
    _, experiment = tracked(server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    output = tmp_path / "run"
    fit(tiny_config(imagefolder, output, loggers=["mlflow"], epochs=1))
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: MLflow at http://127.0.0.1:")
    assert f"twins sync {output.resolve()} --to mlflow" in warnings[0]
    assert (output / "checkpoints" / "last.pt").is_file()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    assert main(["sync", str(output), "--to", "mlflow"]) == 0
    records = len(read_metrics(output / "metrics.jsonl"))
    assert f"{records} of {records} records sent to mlflow" in capsys.readouterr().out
    run = only_run(server, experiment)
    assert run["info"]["status"] == "FINISHED"
    assert server.history(run["info"]["run_id"]) == expected_history(output)
    assert main(["sync", str(output), "--to", "mlflow"]) == 0
    assert f"0 of {records} records sent" in capsys.readouterr().out
    assert len(server.runs_of(experiment)) == 1


@pytest.mark.slow
def test_a_server_going_down_mid_run_costs_one_line_and_sync_fills_the_gap(
    imagefolder, tiny_config, tmp_path, monkeypatch, capsys
):
    """A server of its own, stopped as step 3 begins: one warning, the run finishes with its
    checkpoints; started again, `twins sync` sends the steps it missed, each once."""
    own = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    own.start()
    try:
        real_step, calls = twins.train.trainer.optimizer_step, []

        def step_stopping_the_server(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                own.stop()
            return real_step(*args, **kwargs)

        monkeypatch.setattr(twins.train.trainer, "optimizer_step", step_stopping_the_server)
        keys, experiment = tracked(own)
        output = tmp_path / "run"
        fit(tiny_config(imagefolder, output, mlflow_experiment=experiment, **keys))
        warnings = [line for line in capsys.readouterr().out.splitlines() if "mlflow" in line]
        assert len(warnings) == 1 and "mlflow stopped taking metrics" in warnings[0], warnings
        assert load_checkpoint(output / "checkpoints" / "last.pt")["epoch"] == 3
        own.start()
        assert main(["sync", str(output), "--to", "mlflow"]) == 0
        run = only_run(own, experiment)
        assert own.history(run["info"]["run_id"]) == expected_history(output)
        assert run["info"]["status"] == "FINISHED"
    finally:
        own.stop()
