"""The benchmark result as a small text table."""

from __future__ import annotations

from typing import Any

from twins.benchmark.hardware import describe_cpu
from twins.benchmark.parts import side_by_side


def format_report(result: dict[str, Any]) -> str:
    where = result["device_name"]
    if result["threads"]:
        where += f", {result['threads']} threads"
    flags = [result["precision"], f"batch {result['batch_size']}", f"{result['image_size']} px"]
    flags += [flag for flag in ("channels_last", "compile") if result[flag]]
    lines = [
        f"{result['model']} {result['mode']} on {result['device']} ({where}): {', '.join(flags)}",
        describe_cpu(result["cpu"]),
    ]
    if result["mode"] == "data":
        lines.append(
            f"training loader on {result['data_root']}, {result['workers']} workers; CPU time "
            "of all the loader's processes, normalisation and erasing included"
        )
        lines.append(f"{'':6} {'img/CPU-s':>10} {'images/s':>10} {'CPU s/pass':>11}")
        for name, row in result["results"].items():
            lines.append(
                f"{name:6} {row['images_per_cpu_s']:10.1f} {row['images_per_s']:10.1f} "
                f"{row['cpu_s_per_pass']:11.2f}"
            )
    else:
        peak = result["peak_tflops"]
        lines.append(
            f"{_count(result['gmacs_per_image'], 'MACs')} per image forward "
            f"({_count(result['gflops_per_image'], 'FLOP')} per image per step); peak "
            + (f"{peak:.3g} TFLOP/s ({result['peak_source']})" if peak else result["peak_source"])
        )
        width = max(6, *(len(name) for name in result["results"]))
        lines.append(
            f"{'':{width}} {'images/s':>10} {'step ms':>10} {'TFLOP/s':>9} {'of peak':>8} "
            f"{'peak mem (' + result['memory_kind'] + ')':>22} {'page faults/step':>16}"
        )
        for name, row in result["results"].items():
            share = f"{row['peak_fraction']:.1%}" if row["peak_fraction"] is not None else "-"
            lines.append(
                f"{name:{width}} {row['images_per_s']:10.1f} {row['step_ms']:10.1f} "
                f"{row['tflops']:9.3f} {share:>8} {row['peak_memory_mib']:18.0f} MiB "
                f"{row['page_faults_per_step']:16,.0f}"
            )
    if result["ratio"] is not None:
        rounds = " ".join(f"{r:.2f}" for r in result["ratios"])
        data = result["mode"] == "data"
        reference = result.get("reference") or "timm"
        lines.append(
            f"{result.get('ratio_of') or f'ours / {reference}'}: {result['ratio']:.2f}x "
            f"{'images per CPU-second' if data else 'images/s'} "
            f"(median of {len(result['ratios'])} alternated rounds: {rounds})"
        )
    if result.get("int8_ratio") is not None:
        rounds = " ".join(f"{r:.2f}" for r in result["int8_ratios"])
        lines.append(
            f"openvino_int8 / ours: {result['int8_ratio']:.2f}x images/s (median of "
            f"{len(result['int8_ratios'])} alternated rounds: {rounds}); {result['int8_note']}"
        )
    for name, profile in (result.get("profile") or {}).items():
        lines.append(
            f"{name}: {profile['ms_per_step']:.1f} ms of {profile['kind']} self time per step; "
            "the largest:"
        )
        for entry in profile["entries"]:
            lines.append(
                f"  {entry['share']:6.1%} {entry['ms_per_step']:9.2f} ms "
                f"{entry['calls_per_step']:6.0f}x  {_shorten(entry['name'])}"
            )
    lines += _parts_table(result.get("profile") or {})
    return "\n".join(lines)


def _parts_table(profiles: dict[str, Any]) -> list[str]:
    """Each implementation's self time by part, forward and backward, side by side."""
    names, rows = side_by_side(profiles)
    if not names:
        return []
    header = f"{'ms per step by part':28}" + "".join(
        f" {name + ' fwd':>11} {name + ' bwd':>11}" for name in names
    )
    return [header] + [
        f"{part:28}" + "".join(f" {ms:11.1f}" for ms in cells) for part, cells in rows
    ]


def _count(billions: float, unit: str) -> str:
    """A count given in billions, to 3 significant figures with the prefix that fits (a tiny
    model's MFLOP would read 0.0 GFLOP)."""
    for prefix, scale in (("G", 1.0), ("M", 1e-3), ("k", 1e-6)):
        if billions >= scale:
            return f"{billions / scale:.3g} {prefix}{unit}"
    return f"{billions * 1e9:.3g} {unit}"


def _shorten(name: str, width: int = 90) -> str:
    # CUDA kernel names spell out their templates; the start names the kernel.
    return name if len(name) <= width else name[: width - 3] + "..."
