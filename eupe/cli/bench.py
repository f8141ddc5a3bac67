"""``eupe bench``: latency, throughput, peak memory and GFLOPs of models x sizes x batch sizes x backends.

Prints a Markdown table and writes ``bench.csv``, ``bench.md``, ``bench.png`` and the resolved ``config.yaml``
to ``--output-dir``. Settings come from ``--config`` (YAML), then the flags below, then ``--set key=value`` overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..benchmark import BACKENDS, BenchConfig, draw_chart, markdown_table, run_benchmark, write_csv
from ..config import save_config
from ..utils.io import atomic_write_text
from ..utils.optional import available, install_hint
from .common import ConfigFlag, add_config_args, add_config_flags, resolve_config

#: The flags of :class:`~eupe.benchmark.BenchConfig` fields; list settings take comma-separated values.
BENCH_FLAGS = {
    "models": ConfigFlag("comma-separated model names", separator=","),
    "sizes": ConfigFlag("comma-separated square input sizes", separator=","),
    "batch_sizes": ConfigFlag("comma-separated batch sizes", separator=","),
    "backends": ConfigFlag(f"comma-separated, from: {', '.join(BACKENDS)}", separator=","),
    "rounds": "timed rounds, interleaved across backends",
    "warmup": "untimed warm-up calls per backend and shape",
    "threads": "intra-op threads for torch and ONNX Runtime (0: the libraries' defaults)",
    "weights": "weights to load ('random': speed does not depend on them)",
    "output_dir": "where to write bench.csv/.md/.png",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark inference speed", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, BenchConfig, BENCH_FLAGS)
    add_config_args(parser, example="rounds=20")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(BenchConfig, args)
    results = run_benchmark(cfg)
    table = markdown_table(results)
    print(table)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.md", table)
    write_csv(results, out / "bench.csv")
    save_config(cfg, out / "config.yaml")
    written = [out / "bench.csv", out / "bench.md"]
    if any(r.times_ms for r in results) and available("matplotlib"):
        written.append(draw_chart(results, out / "bench.png"))
    elif any(r.times_ms for r in results):
        print(f"bench.png not drawn: {install_hint('matplotlib')}")
    print("wrote " + ", ".join(map(str, written)))
    if not any(r.times_ms for r in results):
        reasons = sorted({f"{r.backend}: {r.error}" for r in results})
        print(f"eupe bench: error: no backend ran ({'; '.join(reasons)})", file=sys.stderr)
        return 1
    return 0
