"""The CPU speed goals, checked on the machine at hand: PCPVT-S and SVT-S, inference and training,
one thread, batch 16, 224 px, float32, each alternated with timm's implementation on the same
weights and inputs (goals: inference 1.3x timm, training 1.15x), then profiled by part of the
model, forward and backward; and the training loader against timm's, in images per CPU-second,
the median of three runs (goal 1.5x).

    make bench                                  # = python scripts/cpu_benchmark.py --out bench/
    python scripts/cpu_benchmark.py --out bench/ --models svt_small --skip-loader

Writes OUT/cpu_benchmark.md (the tables for docs/benchmarks.md, the CPU named in their header)
and OUT/cpu_benchmark.json (every measurement), rewritten after each case, so a run cut short
keeps what it measured. 10-12 minutes on two cores of an AMD EPYC. The loader reads
--data, or 150 ImageNet-like JPEGs written into OUT/bench-images first
(scripts/make_bench_images.py). Run it on an otherwise idle machine: the ratios are measured in
alternated rounds, but a busy core still widens their spread.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

from twins.benchmark import BenchmarkOptions, run_benchmark
from twins.benchmark.hardware import describe_cpu
from twins.benchmark.parts import side_by_side

MODELS = ("pcpvt_small", "svt_small")
GOALS = {"infer": 1.3, "train": 1.15, "data": 1.5}
NAMES = {"pcpvt_small": "PCPVT-S", "svt_small": "SVT-S", "infer": "inference", "train": "training"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the tables and JSON")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per case")
    parser.add_argument("--iters", type=int, default=3, help="timed (and profiled) steps")
    parser.add_argument("--data", type=Path, help="image folder for the loader")
    parser.add_argument("--loader-runs", type=int, default=3, help="loader runs (median)")
    parser.add_argument("--loader-batches", type=int, default=16, help="batches per pass")
    parser.add_argument("--skip-loader", action="store_true")
    return parser.parse_args(argv)


def model_options(args: argparse.Namespace, model: str, mode: str) -> BenchmarkOptions:
    return BenchmarkOptions(
        model=model,
        device="cpu",
        mode=mode,
        batch_size=args.batch_size,
        image_size=args.image_size,
        iters=args.iters,
        rounds=args.rounds,
        threads=1,
        compare="timm",
        profile=True,
    )


def loader_options(args: argparse.Namespace, data: Path) -> BenchmarkOptions:
    return BenchmarkOptions(
        mode="data",
        data=str(data),
        batch_size=32,
        image_size=args.image_size,
        iters=args.loader_batches,
        rounds=5,
        workers=2,
        threads=1,
        compare="timm",
    )


def bench_images(out: Path) -> Path:
    """OUT/bench-images, written by scripts/make_bench_images.py unless already there."""
    folder = out / "bench-images"
    if not folder.is_dir():
        path = Path(__file__).resolve().parent / "make_bench_images.py"
        spec = importlib.util.spec_from_file_location("make_bench_images", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.make_images(folder)
    return folder


def markdown(header: dict, rows: list[dict], loader: list[dict]) -> str:
    lines = [
        f"CPU: {header['cpu']}; torch {header['torch']}, timm {header['timm']}, "
        f"Python {header['python']}; {header['date']}.",
        f"Command: `{header['command']}`",
        "",
        "| measure | ours | timm | ours / timm (rounds) | page faults per step, ours / timm "
        "| goal | |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        ours, ref = row["results"]["ours"], row["results"]["timm"]
        lines.append(
            f"| {NAMES[row['model']]} {NAMES[row['mode']]} | {ours['images_per_s']:.1f} img/s "
            f"| {ref['images_per_s']:.1f} img/s | **{row['ratio']:.2f}x** "
            f"({' '.join(f'{r:.2f}' for r in row['ratios'])}) "
            f"| {ours['page_faults_per_step']:,.0f} / {ref['page_faults_per_step']:,.0f} "
            f"| {GOALS[row['mode']]}x | {_verdict(row['ratio'], row['mode'])} |"
        )
    if loader:
        ratio = statistics.median(run["ratio"] for run in loader)
        ours = statistics.median(run["results"]["ours"]["images_per_cpu_s"] for run in loader)
        ref = statistics.median(run["results"]["timm"]["images_per_cpu_s"] for run in loader)
        runs = ", ".join(f"{run['ratio']:.2f}" for run in loader)
        lines.append(
            f"| loader, 2 workers | {ours:.0f} img/CPU-s | {ref:.0f} img/CPU-s "
            f"| **{ratio:.2f}x** (runs: {runs}) | | {GOALS['data']}x | {_verdict(ratio, 'data')} |"
        )
    for row in rows:
        lines += ["", *_parts_table(row)]
    return "\n".join(lines) + "\n"


def _verdict(ratio: float, mode: str) -> str:
    return "met" if ratio >= GOALS[mode] else "not met"


def _parts_table(row: dict) -> list[str]:
    """Milliseconds per step by part, ours and timm's, forward and backward."""
    _, parts = side_by_side(row["profile"])  # ours, then timm
    title = f"{NAMES[row['model']]} {NAMES[row['mode']]}, ms per step"
    lines = [
        f"| {title} | ours fwd | ours bwd | timm fwd | timm bwd | timm / ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part, cells in parts:
        ours, ref = cells[0] + cells[1], cells[2] + cells[3]
        ratio = f"{ref / ours:.2f}" if ours > 0 else "-"
        lines.append(f"| {part} | " + " | ".join(f"{ms:.0f}" for ms in cells) + f" | {ratio} |")
    return lines


def write_results(out: Path, header: dict, rows: list[dict], loader: list[dict]) -> None:
    report = {"header": header, "rows": rows, "loader": loader}
    (out / "cpu_benchmark.json").write_text(json.dumps(report, indent=1))
    (out / "cpu_benchmark.md").write_text(markdown(header, rows, loader))


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    header = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "command": "python " + " ".join([os.path.relpath(__file__), *arguments]),
    }
    rows: list[dict] = []
    loader: list[dict] = []
    for mode in ("infer", "train"):
        for model in args.models:
            row = run_benchmark(model_options(args, model, mode))
            header["cpu"] = describe_cpu(row["cpu"]).removeprefix("CPU: ")
            rows.append(row)
            print(f"{model} {mode}: ours / timm {row['ratio']:.2f}x", flush=True)
            write_results(args.out, header, rows, loader)
    if not args.skip_loader:
        data = args.data or bench_images(args.out)
        for _ in range(args.loader_runs):
            run = run_benchmark(loader_options(args, data))
            header["cpu"] = describe_cpu(run["cpu"]).removeprefix("CPU: ")
            loader.append(run)
            print(f"loader: ours / timm {run['ratio']:.2f}x", flush=True)
            write_results(args.out, header, rows, loader)
    print(f"wrote {args.out / 'cpu_benchmark.md'} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
