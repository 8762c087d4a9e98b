"""Several processes under torchrun (gloo on the CPU): two launchers acting as two nodes over
loopback, an elastic restart after a worker is killed, and evaluation sharded over three
processes, on a data set whose validation split does not divide evenly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from twins.cli.main import main
from twins.train import save_config
from twins.train.metrics import read_metrics

FAULTY_TWINS = Path(__file__).with_name("faulty_twins.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMINGS = ("epoch_seconds", "images_per_s")
VAL_IMAGES = 13  # 5 + 4 + 3 + 1: 7 and 6 for two processes, 5, 4 and 4 for three
# 64 training images, 8 per process and step: 4 steps per epoch, a checkpoint every 2.
RECIPE = {"epochs": 2, "batch_size": 8, "mix_up": 0.8, "drop_path_rate": 0.1}
RECIPE |= {"save_every_steps": 2, "log_every": 1}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo over loopback")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    # A group restarted by torchrun must not find the previous group's keys in a rendezvous
    # store shared across restarts (pytorch/pytorch#135712): docs/distributed.md says the same.
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        **extra,
    }


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()  # torchrun passes SIGTERM on to its workers
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"timed out:\n{out}\n{err}")
    return process.returncode, out, err


def launch(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=environment(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def epoch_records(output: Path) -> list[dict]:
    records = read_metrics(output / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


@pytest.fixture(scope="module")
def data(make_imagefolder, tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"), 16, [5, 4, 3, 1])


@pytest.fixture(scope="module")
def two_nodes(data, tiny_config, tmp_path_factory) -> tuple[Path, list[str]]:
    """A run by two torchrun launchers that meet at a c10d rendezvous on 127.0.0.1, one
    process each; returns the output folder and each launcher's stdout."""
    folder = tmp_path_factory.mktemp("two_nodes")
    save_config(tiny_config(data, folder / "run", **RECIPE), folder / "recipe.yaml")
    rendezvous = [
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "--rdzv-id=twins-two-nodes",
        "--local-addr=127.0.0.1",
    ]
    train = ["-m", "twins", "train", "-c", str(folder / "recipe.yaml")]
    nodes = [
        launch([*TORCHRUN, *rendezvous, f"--rdzv-conf=is_host={host}", *train])
        for host in (1, 0)  # the first hosts the rendezvous store
    ]
    outputs = []
    for node in nodes:
        code, out, err = finish(node)
        assert code == 0, err
        outputs.append(out)
    return folder / "run", outputs


def test_two_launchers_train_as_two_nodes_and_evaluate_each_image_once(two_nodes):
    output, stdouts = two_nodes
    # Only rank 0 prints; its first lines give the global batch and the learning rate.
    printing = [out for out in stdouts if "epoch 1/2" in out]
    assert len(printing) == 1
    assert "batch: global 16 = 8 per device × 2 × 1 accumulation; lr 0.002" in printing[0]
    assert "device: cpu × 2 process(es)" in printing[0]
    epochs = [r for r in epoch_records(output) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["val_images"] for r in epochs] == [VAL_IMAGES, VAL_IMAGES]
    assert [r["step"] for r in epochs] == [4, 8]
    assert {p.name for p in (output / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}


def test_elastic_restart_after_a_killed_worker_finishes_as_the_unbroken_run(
    two_nodes, data, tiny_config, tmp_path
):
    save_config(tiny_config(data, tmp_path / "run", **RECIPE), tmp_path / "recipe.yaml")
    command = [
        *TORCHRUN,
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        str(FAULTY_TWINS),
        "train",
        "-c",
        str(tmp_path / "recipe.yaml"),
    ]
    # Rank 1 SIGKILLs itself before step 3; the group restarts from the checkpoint of step 2.
    code, out, err = finish(launch(command, TWINS_KILL_AT_STEP="3", TWINS_KILL_RANK="1"))
    assert code == 0, err
    assert "exitcode: -9" in err
    assert "resuming from" in out and "within epoch 1 (step 2, 32 of its images done)" in out
    assert epoch_records(tmp_path / "run") == epoch_records(two_nodes[0])


def test_evaluation_over_three_processes_counts_each_image_once(two_nodes, data, capsys):
    output = two_nodes[0]
    best = output / "checkpoints" / "best.pt"
    recipe = ["-c", str(output.parent / "recipe.yaml"), "--checkpoint", str(best), "--json"]
    # The `twins` script itself under torchrun, three processes for 13 images.
    script = Path(sys.executable).with_name("twins")
    if not script.is_file():
        pytest.skip("the twins script is not installed")
    command = [*TORCHRUN, "--standalone", "--nproc_per_node=3", str(script), "eval", *recipe]
    code, out, err = finish(launch(command))
    assert code == 0, err
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 only
    capsys.readouterr()
    assert main(["eval", *recipe]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert reports[0]["images"] == alone["images"] == VAL_IMAGES
    assert reports[0]["top1"] == pytest.approx(alone["top1"])
    assert reports[0]["top5"] == pytest.approx(alone["top5"])
    assert reports[0]["loss"] == pytest.approx(alone["loss"], rel=1e-5)
