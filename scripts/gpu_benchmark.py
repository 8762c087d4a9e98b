"""The GPU comparison with timm: PCPVT-S and SVT-S, inference and training, eager and compiled,
in bf16 autocast, each case alternated with timm's implementation on the same weights and inputs.

    pip install --no-deps -e .           # on a machine with torch and timm; no network needed
    python scripts/gpu_benchmark.py --out results/

Writes OUT/gpu_benchmark.md (the table for docs/benchmarks.md) and OUT/gpu_benchmark.json (every
measurement), rewritten after each case, so a run cut short keeps what it measured. Cases run
cheapest first (eager, then compiled inference, then compiled training); a case that would start
past --budget-s seconds (estimated from the cases before it) is skipped and listed as such, which
keeps the whole run under about 8 minutes on one GPU. Smoke test without a GPU:
    python scripts/gpu_benchmark.py --out /tmp/b --device cpu --batch-size 2 --image-size 64 \
        --warmup 1 --iters 1 --rounds 1 --eager-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import timm
import torch

from twins.benchmark import BenchmarkOptions, run_benchmark
from twins.benchmark.hardware import device_name

MODELS = ("pcpvt_small", "svt_small")

# Seconds a case is expected to take (both implementations, compilation included) until one of
# its kind has run; compiled training compiles forward and backward of two models.
FIRST_GUESS_S = {(False, "infer"): 30.0, (False, "train"): 45.0}
FIRST_GUESS_S |= {(True, "infer"): 120.0, (True, "train"): 200.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the table and JSON")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compiles)")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds")
    parser.add_argument(
        "--budget-s", type=float, default=450.0, help="start no case expected to end after this"
    )
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled cases")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    return parser.parse_args(argv)


def cases(args: argparse.Namespace) -> list[tuple[str, str, bool]]:
    """(model, mode, compiled): every eager case first, then the compiled ones model by model,
    so a budget that runs out drops the last model's compiled cases, not every compiled
    training case (the targets name PCPVT-S's training against timm's best, compiled or not)."""
    eager = [(model, mode, False) for mode in ("infer", "train") for model in args.models]
    if args.eager_only:
        return eager
    return eager + [(model, mode, True) for model in args.models for mode in ("infer", "train")]


def markdown(header: dict, rows: list[dict], skipped: list[str], failed: list[str]) -> str:
    lines = [
        f"Device: {header['device_name']}; torch {header['torch']}, timm {header['timm']}; "
        f"{header['precision']} autocast, batch {header['batch_size']}, "
        f"{header['image_size']} px; {header['date']}.",
        f"Command: `{header['command']}`",
        "",
        "| model | mode | compiled | ours img/s | timm img/s | ours / timm | ours TFLOP/s "
        "| share of peak | ours peak mem | timm peak mem |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, ref = row["results"]["ours"], row["results"]["timm"]
        share = f"{ours['peak_fraction']:.1%}" if ours["peak_fraction"] is not None else "-"
        lines.append(
            f"| {row['model']} | {row['mode']} | {'yes' if row['compile'] else 'no'} "
            f"| {ours['images_per_s']:,.0f} | {ref['images_per_s']:,.0f} | {row['ratio']:.2f}x "
            f"| {ours['tflops']:.1f} | {share} | {ours['peak_memory_mib'] / 1024:.1f} GiB "
            f"| {ref['peak_memory_mib'] / 1024:.1f} GiB |"
        )
    if rows:
        lines.append("")
        peak, source = rows[0]["peak_tflops"], rows[0]["peak_source"]
        lines.append(f"Peak: {peak:.4g} TFLOP/s ({source})." if peak else f"Peak: {source}.")
    if skipped:
        lines.append(f"Skipped (time budget): {', '.join(skipped)}.")
    if failed:
        lines.append(f"Failed: {'; '.join(failed)}.")
    return "\n".join(lines) + "\n"


def write_results(
    out: Path, header: dict, rows: list[dict], skipped: list[str], failed: list[str]
) -> None:
    """Rewritten after every case, so a run cut short keeps what it measured."""
    report = {"header": header, "rows": rows, "skipped": skipped, "failed": failed}
    (out / "gpu_benchmark.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_benchmark.md").write_text(markdown(header, rows, skipped, failed))


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible: run on a GPU machine or pass --device cpu", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    header = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "command": "python " + " ".join([os.path.relpath(__file__), *arguments]),
        "device_name": device_name(torch.device(args.device)),
    }
    rows: list[dict] = []
    skipped: list[str] = []
    failed: list[str] = []
    taken: dict[tuple[bool, str], float] = {}
    for model, mode, compiled in cases(args):
        name = f"{model} {mode}{' compiled' if compiled else ''}"
        kind = (compiled, mode)
        expected = taken.get(kind, FIRST_GUESS_S[kind])
        if compiled and mode == "train" and kind not in taken and (True, "infer") in taken:
            expected = 2 * taken[(True, "infer")]
        if time.perf_counter() - start + expected > args.budget_s:
            skipped.append(name)
            continue
        case_start = time.perf_counter()
        options = BenchmarkOptions(
            model=model,
            device=args.device,
            mode=mode,
            precision=args.precision,
            batch_size=args.batch_size,
            image_size=args.image_size,
            compile=compiled,
            warmup=args.warmup,
            iters=args.iters,
            rounds=args.rounds,
            compare="timm",
        )
        try:
            row = run_benchmark(options)
        except Exception as error:  # one failing case (a compiler error, OOM) keeps the others
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            failed.append(f"{name} ({type(error).__name__}: {message[:200]})")
            print(f"{name}: failed, {failed[-1]}", file=sys.stderr, flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
            write_results(args.out, header, rows, skipped, failed)
            continue
        row["wall_s"] = time.perf_counter() - case_start
        taken[kind] = max(taken.get(kind, 0.0), row["wall_s"])
        rows.append(row)
        ours, ref = row["results"]["ours"], row["results"]["timm"]
        print(
            f"{name}: ours {ours['images_per_s']:,.0f} img/s, timm {ref['images_per_s']:,.0f} "
            f"img/s, {row['ratio']:.2f}x ({row['wall_s']:.0f} s)",
            flush=True,
        )
        if args.device == "cuda":
            torch.cuda.empty_cache()
        write_results(args.out, header, rows, skipped, failed)
    write_results(args.out, header, rows, skipped, failed)
    print(f"wrote {args.out / 'gpu_benchmark.md'} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
