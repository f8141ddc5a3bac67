"""Speed benchmarks behind ``eupe bench``: latency/throughput, memory and FLOPs of EUPE backbones per backend."""

from .backends import BACKENDS, Backend
from .measure import PeakMemory, gflops_per_image, peak_memory
from .report import draw_chart, markdown_table, rows, write_csv
from .runner import BenchConfig, BenchResult, run_benchmark

__all__ = ["BACKENDS", "Backend", "BenchConfig", "BenchResult", "PeakMemory", "draw_chart", "gflops_per_image",
           "markdown_table", "peak_memory", "rows", "run_benchmark", "write_csv"]
