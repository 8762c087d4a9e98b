"""Exact resume: a run stopped at any step, or killed with SIGKILL (also while it writes a
checkpoint), and started again with the same command ends as the unbroken run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import twins.train.trainer
from factories import EVERY_RANDOM_DRAW
from twins.tasks import fit
from twins.train import save_config
from twins.train.metrics import read_metrics
from twins.train.resume import load_checkpoint

FAULTY_TWINS = Path(__file__).with_name("faulty_twins.py")
TIMINGS = ("epoch_seconds", "images_per_s", "output")
# Every source of randomness on; 8 steps per epoch, a checkpoint every 3 steps, so resumes
# happen within epochs and at their ends.
RECIPE = EVERY_RANDOM_DRAW | {"batch_size": 8, "save_every_steps": 3, "log_every": 2}


class Killed(BaseException):
    """Stands for SIGKILL in the in-process tests: nothing in the run catches it."""


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def assert_same_run(output: Path, reference: Path) -> None:
    """The same metrics.jsonl (but timings) and the same final weights, optimizer and EMA."""
    assert without_timings(read_metrics(output / "metrics.jsonl")) == without_timings(
        read_metrics(reference / "metrics.jsonl")
    )
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(output / "checkpoints" / "last.pt")
    assert "epoch_progress" not in b
    for key in ("model", "model_ema"):
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][index]["exp_avg_sq"])
    best_a = load_checkpoint(reference / "checkpoints" / "best.pt")
    best_b = load_checkpoint(output / "checkpoints" / "best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(best_a["model"][n], best_b["model"][n]) for n in best_a["model"])


# Two ways through the data: one process and batches of 8 with the loader in this process;
# accumulation_step 2 with two loader workers, each augmenting its share of the images.
SETTINGS = {"plain": {}, "accumulated": {"accumulation_step": 2, "num_parallel_workers": 2}}


@pytest.fixture(scope="module")
def unbroken(imagefolder, tiny_config, tmp_path_factory) -> dict[str, Path]:
    """The output folders of unbroken runs, by name of their SETTINGS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    outputs = {}
    for name, settings in SETTINGS.items():
        output = tmp_path_factory.mktemp(f"unbroken_{name}")
        fit(tiny_config(imagefolder, output, **RECIPE, **settings))
        outputs[name] = output
    torch.set_num_threads(threads)
    return outputs


def kill_at_steps(monkeypatch, step: int) -> None:
    """The next fit dies as it is about to take its `step`-th optimizer step."""
    real_step = twins.train.trainer.optimizer_step
    calls = []

    def optimizer_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(twins.train.trainer, "optimizer_step", optimizer_step)


# (SETTINGS name, [(the optimizer step a try dies before, the step of its last.pt)]):
# within epoch 1 after its first checkpoint, then within epoch 2.
KILLS = [("plain", [(5, 3), (14, 12)]), ("accumulated", [(4, 3), (7, 6)])]


@pytest.mark.parametrize(("settings", "kills"), KILLS)
def test_run_stopped_within_epochs_resumes_to_the_unbroken_result(
    unbroken, imagefolder, tiny_config, tmp_path, monkeypatch, settings, kills
):
    config = tiny_config(imagefolder, tmp_path, **RECIPE, **SETTINGS[settings])
    done = 0
    for step, saved in kills:
        kill_at_steps(monkeypatch, step - done)
        with pytest.raises(Killed):
            fit(config)
        monkeypatch.undo()
        last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
        assert last["global_step"] == saved and "epoch_progress" in last
        done = saved
    result = fit(config)
    assert result["epoch"] == 3 and result["val_images"] == 14
    assert_same_run(tmp_path, unbroken[settings])


def test_image_counts_resume_exactly_with_loader_workers(
    make_imagefolder, tiny_config, tmp_path, monkeypatch
):
    """Workers read batches ahead of the step; a checkpoint counts only the batches trained on,
    so converted and unreadable images are counted as often as in the unbroken run."""
    data = make_imagefolder(tmp_path / "data", 16, [5, 4, 3, 2])
    for index, path in enumerate(sorted((data / "train").glob("*/*.png"))):
        if index % 3 == 0:  # a third of the images stored as grayscale: converted when read
            Image.open(path).convert("L").save(path)
    (data / "train" / "class_0" / "broken.png").write_bytes(b"not an image")
    recipe = {"epochs": 2, "batch_size": 8, "save_every_steps": 3, "num_parallel_workers": 2}
    recipe |= {"with_ema": True, "ema_decay": 0.9}
    fit(tiny_config(data, tmp_path / "unbroken", **recipe))
    config = tiny_config(data, tmp_path / "run", **recipe)
    kill_at_steps(monkeypatch, 5)
    with pytest.raises(Killed):
        fit(config)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 3
    fit(config)
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs[-1]["images_converted"] > 0 and epochs[-1]["images_skipped"] > 0
    assert_same_run(tmp_path / "run", tmp_path / "unbroken")


def run_cli(recipe: Path, **fault: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update({f"TWINS_{key.upper()}": str(value) for key, value in fault.items()})
    command = [sys.executable, str(FAULTY_TWINS), "train", "-c", str(recipe)]
    # A session of its own: a signal sent to the run's process group stays there.
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
    )


def test_sigkill_while_saving_leaves_the_last_checkpoint_and_resumes_exactly(
    unbroken, imagefolder, tiny_config, tmp_path
):
    output = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, output, **RECIPE), recipe)
    # Killed half way through writing its second checkpoint (last.pt at step 6, within epoch 1):
    # last.pt stays the one of step 3, next to an unfinished temporary file.
    killed = run_cli(recipe, kill_in_save=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((output / "checkpoints").glob(".last.*.tmp.pt"))
    assert load_checkpoint(output / "checkpoints" / "last.pt")["global_step"] == 3
    # The same command again finishes the run as if nothing had happened.
    finished = run_cli(recipe)
    assert finished.returncode == 0, finished.stderr
    assert "within epoch 1 (step 3" in finished.stdout and "Traceback" not in finished.stderr
    assert not list((output / "checkpoints").glob(".*.tmp"))
    assert_same_run(output, unbroken["plain"])


@pytest.mark.parametrize(
    ("name", "status"),
    [("TERM", 128 + signal.SIGTERM), pytest.param("INT", 130, marks=pytest.mark.slow)],
)
def test_a_stop_signal_saves_the_step_and_the_same_command_resumes_exactly(
    unbroken, imagefolder, tiny_config, tmp_path, name, status
):
    """Pre-emption (SIGTERM) or Ctrl-C (SIGINT) at step 5: the step finishes, last.pt holds it
    (the step's own checkpoint, not the one of step 3), and the rerun computes nothing twice."""
    output = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_config(imagefolder, output, **RECIPE, num_parallel_workers=2), recipe)
    stopped = run_cli(recipe, signal_at_step=5, signal=name)
    assert stopped.returncode == status, stopped.stderr
    assert (
        f"stopped by SIG{name} after step 5" in stopped.stdout and "Traceback" not in stopped.stderr
    )
    last = load_checkpoint(output / "checkpoints" / "last.pt")
    assert last["global_step"] == 5 and "epoch_progress" in last
    finished = run_cli(recipe)
    assert finished.returncode == 0, finished.stderr
    assert "within epoch 1 (step 5, 40 of its images done)" in finished.stdout
    unbroken_workers = tmp_path / "unbroken"
    fit(tiny_config(imagefolder, unbroken_workers, **RECIPE, num_parallel_workers=2))
    assert_same_run(output, unbroken_workers)


@pytest.mark.slow
def test_run_killed_at_random_moments_resumes_to_the_unbroken_result(
    imagefolder, tiny_config, tmp_path
):
    """SIGKILL after a random 2.5-7 s (start-up, training, evaluation, writing files), again and
    again until a try finishes on its own; 30 epochs take some 15 s after the start-up."""
    recipe = RECIPE | {"epochs": 30, "cooldown_epochs": 0}
    torch.set_num_threads(1)
    fit(tiny_config(imagefolder, tmp_path / "unbroken", **recipe))
    output = tmp_path / "run"
    save_config(tiny_config(imagefolder, output, **recipe), tmp_path / "recipe.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "twins", "train", "-c", str(tmp_path / "recipe.yaml")]
    generator = random.Random(0)
    kills = 0
    for _ in range(60):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            process.wait(timeout=generator.uniform(2.5, 7.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            continue
        assert process.returncode == 0
        break
    else:
        pytest.fail("the run never finished")
    print(f"finished after {kills} kills")
    assert kills >= 2
    assert_same_run(output, tmp_path / "unbroken")
