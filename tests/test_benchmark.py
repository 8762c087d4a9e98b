"""`twins benchmark` on a tiny model and a tiny image folder: every mode runs and reports."""

import json
import mmap
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

import twins.benchmark.loaders
from factories import make_config, write_imagefolder
from twins.benchmark.hardware import DATASHEET_TFLOPS, peak_tflops
from twins.cli.main import main
from twins.config import save_config
from twins.memory import PeakMemory

TINY = ["--model-args", '{"embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}']
QUICK = ["--device", "cpu", "--image-size", "32", "--batch-size", "2"]
QUICK += ["--warmup", "1", "--iters", "1", "--rounds", "2", "--json"]

MODEL_KEYS = {"gmacs_per_image", "gflops_per_image", "peak_tflops", "peak_source", "ratio"}
RESULT_KEYS = {"images_per_s", "step_ms", "peak_memory_mib", "tflops", "peak_fraction"}
RESULT_KEYS |= {"page_faults_per_step"}


def _run_json(capsys, *args):
    assert main(["benchmark", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_model_modes_report_speed_and_compare_with_timm(capsys, mode):
    result = _run_json(capsys, "--mode", mode, "--compare", "timm", *TINY, *QUICK)
    assert result.keys() >= MODEL_KEYS
    assert result["mode"] == mode and result["device"] == "cpu" and result["batch_size"] == 2
    assert set(result["results"]) == {"ours", "timm"}
    for row in result["results"].values():
        assert row.keys() >= RESULT_KEYS
        assert row["images_per_s"] > 0 and row["step_ms"] > 0 and row["peak_memory_mib"] > 0
        assert 0 < row["peak_fraction"] < 1
    assert len(result["ratios"]) == 2 and result["ratio"] > 0
    assert result["gflops_per_image"] == pytest.approx(
        2 * result["gmacs_per_image"] * (3 if mode == "train" else 1)
    )


def test_profile_lists_where_each_models_step_goes(capsys):
    args = ["--mode", "train", "--compare", "timm", "--profile", *TINY, *QUICK]
    profiles = _run_json(capsys, *args)["profile"]
    assert set(profiles) == {"ours", "timm"}
    for profile in profiles.values():
        assert profile["kind"] == "CPU operators" and profile["ms_per_step"] > 0
        entries = profile["entries"]
        assert 0 < len(entries) <= 15
        shares = [entry["share"] for entry in entries]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
        assert all(entry["calls_per_step"] > 0 for entry in entries)
        # a training step's largest CPU costs include its convolutions' backward
        assert any("convolution_backward" in entry["name"] for entry in entries)
    assert main(["benchmark", *args[:-1]]) == 0
    report = capsys.readouterr().out
    assert "ours: " in report and "of CPU operators self time per step" in report
    assert re.search(r"ms per step by part +ours fwd +ours bwd +timm fwd +timm bwd", report)


def test_profile_splits_each_step_by_part_forward_and_backward(capsys):
    args = ["--mode", "train", "--compare", "timm", "--profile", *TINY, *QUICK]
    profiles = _run_json(capsys, *args)["profile"]
    for name, profile in profiles.items():
        parts = {row["part"]: row for row in profile["parts"]}
        # Our fast path runs attention and MLP without calling their modules: its own ranges
        # must still put their kernels, and their autograd nodes' backward, in those parts.
        for part in ("attention (GSA)", "MLP", "LayerNorm", "PEG", "patch embedding", "head"):
            assert parts[part]["forward_ms"] > 0 and parts[part]["backward_ms"] > 0, (name, part)
        assert parts["optimizer"]["forward_ms"] > 0 and parts["loss"]["forward_ms"] > 0
        assert all(row["operators"] for row in parts.values())
        # every operator's self time is counted once, in one part
        total = sum(row["forward_ms"] + row["backward_ms"] for row in parts.values())
        assert total == pytest.approx(profile["ms_per_step"], rel=1e-6)
    lsa = ["--model", "svt_small", "--model-args", '{"embed_dims": [16, 32, 64, 128]}']
    args = ["--mode", "infer", "--compare", "timm", "--profile", *lsa, *QUICK]
    for profile in _run_json(capsys, *args)["profile"].values():
        parts = {row["part"]: row for row in profile["parts"]}
        assert parts["attention (LSA)"]["forward_ms"] > 0
        assert parts["attention (LSA)"]["backward_ms"] == 0


def test_svt_without_comparison_and_text_report(capsys):
    svt = '{"embed_dims": [16, 32, 64, 128], "depths": [2, 1, 1, 1]}'
    args = ["--model", "svt_small", "--model-args", svt, *QUICK[:-1]]
    assert main(["benchmark", *args]) == 0
    report = capsys.readouterr().out
    assert "svt_small infer on cpu" in report and "ours" in report and "timm" not in report
    # the CPU's model and vector extensions under every table's first line
    cpu = report.splitlines()[1]
    assert cpu.startswith("CPU: ") and "torch kernels " in cpu, report
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    assert ("avx2" in flags) == (" avx2" in cpu or "(avx2" in cpu)
    assert ("avx512f" in flags) == ("avx512f" in cpu)
    # a tiny model's work in units that show it (not "0.00 GMACs ... 0.0 GFLOP")
    work = re.search(r"([\d.]+) ([kMG]?)MACs per image forward \(([\d.]+) ([kMG]?)FLOP", report)
    assert work is not None, report
    assert float(work[1]) >= 1 and float(work[3]) >= 1 and work[2] == work[4] == "M"


@pytest.mark.slow  # Inductor compiles a training step: minutes on a busy CPU
@pytest.mark.timeout(1200)
def test_compile_without_comparison_gives_compiled_over_eager(capsys):
    result = _run_json(capsys, "--mode", "train", "--compile", *TINY, *QUICK)
    assert set(result["results"]) == {"ours", "eager"} and result["reference"] == "eager"
    assert len(result["ratios"]) == 2 and result["ratio"] > 0
    assert main(["benchmark", "--mode", "train", "--compile", *TINY, *QUICK[:-1]]) == 0
    assert "ours / eager: " in capsys.readouterr().out


def test_a_training_config_gives_the_model_it_trains_and_its_switches(capsys, tmp_path):
    config = make_config(
        arch="svt_small", model_args={"embed_dims": [16, 32, 64, 128], "depths": [2, 1, 1, 1]},
        num_classes=7, drop_path_rate=0.1, channels_last=True, semantics="seed",
    )  # fmt: skip
    save_config(config, tmp_path / "run.yaml")
    result = _run_json(capsys, "-c", str(tmp_path / "run.yaml"), *QUICK)
    assert result["model"] == "svt_small" and result["channels_last"] and not result["compile"]
    assert result["model_args"] == config.model_args | {
        "num_classes": 7, "drop_path_rate": 0.1, "act_layer": "gelu_tanh"  # the seed's GELU
    }  # fmt: skip
    assert main(["benchmark", "-c", str(tmp_path / "run.yaml"), "--model", "svt_small"]) == 2
    assert "--model svt_small and --config" in capsys.readouterr().err


def _write_jpegs(root, per_class=4):
    """JPEG class folders `root/train/cat`, `root/train/dog`."""
    write_imagefolder(root, per_class, (0, 0), classes=("cat", "dog"), size=(36, 40), suffix=".jpg")


@pytest.mark.parametrize("workers", [0, 1])
def test_data_mode_reports_images_per_cpu_second_against_timm(capsys, tmp_path, workers):
    _write_jpegs(tmp_path)
    args = ["--mode", "data", "--data", str(tmp_path), "--workers", str(workers)]
    result = _run_json(capsys, *args, "--compare", "timm", *QUICK, "--iters", "3")
    assert result["data_root"] == str(tmp_path / "train") and result["workers"] == workers
    assert set(result["results"]) == {"ours", "timm"} and result["reference"] == "timm"
    for row in result["results"].values():
        assert row["images_per_pass"] == 6  # 3 batches of 2 (of the 8 images), each round
        assert row["images_per_cpu_s"] > 0 and row["images_per_s"] > 0
        assert len(row["images_per_cpu_s_per_round"]) == 2
        assert (row["worker_cpu_s_per_pass"] > 0) == (workers > 0)  # the workers' time counts
    ours, timm = result["images_per_cpu_s"], result["timm_images_per_cpu_s"]
    assert ours == result["results"]["ours"]["images_per_cpu_s"] > 0 and timm > 0
    rounds = result["results"]["ours"]["images_per_cpu_s_per_round"]
    reference = result["results"]["timm"]["images_per_cpu_s_per_round"]
    assert result["ratios"] == [a / b for a, b in zip(rounds, reference, strict=True)]
    assert result["ratio"] == pytest.approx(sum(result["ratios"]) / 2)  # median of two
    assert main(["benchmark", *args, *QUICK[:-1]]) == 0  # the text report, without timm
    report = capsys.readouterr().out
    assert "img/CPU-s" in report and "ours" in report and "timm" not in report


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--mode", "data"],
            "mode data needs data, a folder of class folders of images (command line: --data)",
        ),
        (["--device", "cuda"], "this torch sees none"),
        (["--iters", "0"], "at least 1"),
        (["--mode", "data", "--data", ".", "--profile"], "profile profiles model steps"),
        (["--model-args", '{"act_layer": "gelu_tanh"}', "--compare", "timm"], "exact GELU"),
    ],
)
def test_user_mistakes_are_one_line_errors(capsys, args, message, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["benchmark", *args, "--image-size", "32", "--batch-size", "1"]) == 2
    assert message in capsys.readouterr().err


def test_too_few_images_for_a_batch(capsys, tmp_path):
    _write_jpegs(tmp_path, per_class=1)
    args = ["--mode", "data", "--data", str(tmp_path), *QUICK, "--batch-size", "4"]
    assert main(["benchmark", *args]) == 2
    assert "holds 2 images, not one full batch of 4" in capsys.readouterr().err


def test_a_killed_loader_worker_is_one_line_naming_the_data(capsys, tmp_path, monkeypatch):
    """A worker the system kills (SIGKILL, as the out-of-memory killer sends) while it decodes."""
    _write_jpegs(tmp_path)
    decode = twins.benchmark.loaders.decoder_for("train")

    def decode_or_die(*args, **kwargs):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(*args, **kwargs)

    monkeypatch.setattr(twins.benchmark.loaders, "decoder_for", lambda split: decode_or_die)
    args = ["--mode", "data", "--data", str(tmp_path), "--workers", "1", *QUICK]
    assert main(["benchmark", *args]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    # torch's loader reports the death as "exited unexpectedly" or "is killed by signal: Killed"
    died = r"the data loader worker \(pid \d+\) reading (.+) (exited unexpectedly|is killed by)"
    found = re.search(died, error)
    assert found is not None and found[1] == str(tmp_path / "train"), error
    assert "killed" in error and "--workers 0" in error


def test_gpu_peaks_come_from_the_datasheet(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_tflops(torch.device("cuda"), "bf16") == (989.0, "datasheet, H100 bf16 dense")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_tflops(torch.device("cuda"), "bf16")[0] == DATASHEET_TFLOPS["H100 PCIe"]["bf16"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert peak_tflops(torch.device("cuda"), "fp16")[0] == 312.0


def _resident_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_cpu_peak_memory_resets_to_the_current_size():
    import torch

    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    start = _resident_mib()
    # Fresh pages from the kernel: the allocators' cached memory cannot hide this peak.
    block = mmap.mmap(-1, 256 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    assert memory.read_mib() >= start + 200
    block.close()
    memory.reset()
    assert memory.kind == "RSS"
    assert memory.read_mib() <= _resident_mib() + 1 < start + 100


def test_data_mode_on_packed_data_local_against_timms_wds_reader_and_in_a_bucket(
    capsys, tmp_path, s3_prefix, monkeypatch
):
    from twins.data.packed.writer import pack

    write_imagefolder(tmp_path / "images", 4, (1, 1), classes=("cat", "dog"), size=(36, 40))
    pack(tmp_path / "images", str(tmp_path / "packed"), shard_size=2_000, workers=1)
    args = ["--mode", "data", "--workers", "1", *QUICK, "--iters", "3"]
    local = _run_json(capsys, "--data", str(tmp_path / "packed"), "--compare", "timm", *args)
    assert local["data_kind"] == "packed" and local["reference"] == "timm"
    for row in local["results"].values():
        assert row["images_per_pass"] == 6 and row["images_per_cpu_s"] > 0
        assert row["first_pass_images_per_cpu_s"] > 0 and row["worker_cpu_s_per_pass"] > 0
    assert local["timm_images_per_cpu_s"] == local["results"]["timm"]["images_per_cpu_s"]

    pack(tmp_path / "images", s3_prefix, shard_size=2_000, workers=1)
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    remote = _run_json(capsys, "--data", s3_prefix, *args)
    assert remote["data_kind"] == "packed" and remote["data_root"] == s3_prefix
    assert set(remote["results"]) == {"ours"} and remote["images_per_cpu_s"] > 0
    shards = json.loads((tmp_path / "packed" / "manifest.json").read_text())["splits"]["train"]
    downloaded = {p.name for p in (tmp_path / "cache").glob("shards/*/train-*.tar")}
    # Read from the bucket: shards of the manifest in the cache (those the passes reached; the
    # prefetcher may still be fetching the rest when the benchmark ends).
    assert downloaded and downloaded <= {shard["name"] for shard in shards["shards"]}
