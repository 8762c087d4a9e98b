"""`twins benchmark`: throughput of our models (and loader) side by side with timm's, against the
hardware's peak."""

from twins.benchmark.report import format_report
from twins.benchmark.run import MODES, PRECISIONS, BenchmarkOptions, run_benchmark

__all__ = ["MODES", "PRECISIONS", "BenchmarkOptions", "format_report", "run_benchmark"]
