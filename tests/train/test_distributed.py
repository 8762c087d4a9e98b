"""Several processes under torchrun (gloo on the CPU): two launchers acting as two nodes over
loopback, an elastic restart after a worker is killed, evaluation sharded over three processes
on a data set whose validation split does not divide evenly, and a stop for broken images that
both nodes make together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import twins
from twins.cli.main import main
from twins.data import SafeImageFolder
from twins.train import save_config
from twins.train.metrics import read_metrics
from twins.train.sampler import ResumableSampler

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


def two_node_commands(recipe: Path, rdzv_id: str) -> list[list[str]]:
    """`twins train -c recipe` by two torchrun launchers that meet at a c10d rendezvous on
    127.0.0.1, one process each; the first command hosts the rendezvous store."""
    rendezvous = [
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        f"--rdzv-id={rdzv_id}",
        "--local-addr=127.0.0.1",
    ]
    train = ["-m", "twins", "train", "-c", str(recipe)]
    return [[*TORCHRUN, *rendezvous, f"--rdzv-conf=is_host={host}", *train] for host in (1, 0)]


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
    nodes = [launch(c) for c in two_node_commands(folder / "recipe.yaml", "twins-two-nodes")]
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
    assert "batch: global 16 = 8 per device × 2 × 1 accumulation; peak lr 0.002" in printing[0]
    assert "device: cpu × 2 process(es)" in printing[0]
    epochs = [r for r in epoch_records(output) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["val_images"] for r in epochs] == [VAL_IMAGES, VAL_IMAGES]
    assert [r["step"] for r in epochs] == [4, 8]
    assert {p.name for p in (output / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}


@pytest.mark.slow  # 45-70 s of torchrun runs; the default set keeps the two-node run
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


@pytest.mark.slow  # 45-70 s of torchrun runs; the default set keeps the two-node run
def test_sigterm_to_one_process_stops_every_process_after_the_same_step(
    two_nodes, data, tiny_config, tmp_path
):
    """Pre-emption reaching one worker first: the processes agree to stop after step 3 (not a
    checkpoint step), last.pt holds it, and the same command finishes as the unbroken run."""
    save_config(tiny_config(data, tmp_path / "run", **RECIPE), tmp_path / "recipe.yaml")
    command = [*TORCHRUN, "--standalone", "--nproc_per_node=2", str(FAULTY_TWINS)]
    command += ["train", "-c", str(tmp_path / "recipe.yaml")]
    signal_rank_1 = {"TWINS_SIGNAL_AT_STEP": "3", "TWINS_SIGNAL_TO": "process"}
    code, out, err = finish(launch(command, TWINS_KILL_RANK="1", **signal_rank_1))
    assert code != 0 and "stopped by SIGTERM after step 3" in out, err
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["global_step"] == 3 and last["epoch_progress"]["ranks"].shape[0] == 2
    code, out, err = finish(launch(command))
    assert code == 0, err
    assert "within epoch 1 (step 3, 48 of its images done)" in out
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


def shard_batches(size: int, rank: int, epoch: int, seed: int) -> list[list[int]]:
    """The indices of the training set that `rank` of 2 reads in `epoch` (0-based), batch by
    batch of RECIPE's batch_size, in the order the run's own sampler deals them."""
    sampler = ResumableSampler(range(size), rank, 2, seed)
    sampler.set_epoch(epoch)
    indices, batch = list(sampler), RECIPE["batch_size"]
    return [indices[i : i + batch] for i in range(0, len(indices) - batch + 1, batch)]


def break_files(paths: list[str]) -> None:
    for path in paths:
        Path(path).write_bytes(b"not an image")


def assert_both_nodes_stop_with(recipe: Path, message: str) -> None:
    """Train `recipe` on two nodes; both must stop with the one-line `message`, not wait for the
    other or crash with a traceback."""
    nodes = [launch(command) for command in two_node_commands(recipe, "twins-broken")]
    package = str(Path(twins.__file__).parent)
    for code, _, err in [finish(node, timeout=120) for node in nodes]:
        assert code == 1, err  # torchrun's own status when a worker failed
        assert "(exitcode: 2)" in err, err  # the worker's status, as torchrun reports it
        assert err.count(f"twins: error: {message}") == 1, err
        assert package not in err  # no traceback through the package: one line only


def test_most_training_images_broken_stop_both_nodes_at_the_same_step(
    make_imagefolder, tiny_config, tmp_path
):
    data = make_imagefolder(tmp_path / "data", 16, [5, 4, 3, 1])
    config = tiny_config(data, tmp_path / "run", **RECIPE)
    samples = SafeImageFolder(data / "train").samples
    first, second = (
        [shard_batches(len(samples), r, e, config.seed) for r in (0, 1)] for e in (0, 1)
    )
    # In the first epoch rank 0 (node 0) reads 6 broken files in each of its 4 batches, rank 1
    # only 12 broken ones, all of them dealt to rank 0 in the second epoch.
    rank0_second = {i for batch in second[0] for i in batch}
    broken = {i for batch in first[0] for i in batch[:6]}
    broken.update([i for batch in first[1] for i in batch if i in rank0_second][:12])
    shares = [[sum(i in broken for i in batch) for batch in b] for b in first + second]
    assert all(0 < n < 8 for share in shares for n in share)  # every batch has a readable image
    assert sum(shares[0]) == 24 and sum(shares[1]) == 12
    # Together: 36 of the first epoch's 64 reads, as many as the data set judges after. Each
    # rank alone would judge its own 64 reads at the end of the second epoch, where rank 0 would
    # stop and rank 1 would not.
    assert sum(shares[0] + shares[2]) > 32 >= sum(shares[1] + shares[3])
    break_files([samples[i][0] for i in broken])
    save_config(config, tmp_path / "recipe.yaml")

    # Both processes judge the sums after every step (log_every 1): at step 4 both stop.
    message = f"36 of 64 images read from {data / 'train'} could not be decoded"
    assert_both_nodes_stop_with(tmp_path / "recipe.yaml", message)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.slow  # 45-70 s of torchrun runs; the default set keeps the two-node run
def test_most_validation_images_broken_stop_both_nodes_after_evaluating(
    make_imagefolder, tiny_config, tmp_path
):
    data = make_imagefolder(tmp_path / "data", 16, [5, 4, 3, 1])
    config = tiny_config(data, tmp_path / "run", **RECIPE)
    # Every validation image of rank 0's shard (0, 2, ..., 12): 7 of 13, none of rank 1's. Alone,
    # rank 0 would stop after the second evaluation (its reads reach 13), rank 1 never.
    samples = SafeImageFolder(data / "val").samples
    break_files([path for path, _ in samples[0::2]])
    save_config(config, tmp_path / "recipe.yaml")

    message = f"7 of 13 images read from {data / 'val'} could not be decoded"
    assert_both_nodes_stop_with(tmp_path / "recipe.yaml", message)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["kind"] for r in records] == ["step"] * 4  # stopped before the epoch's record
