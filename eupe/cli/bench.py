"""``eupe bench``: latency, throughput, peak memory and GFLOPs of models x sizes x batch sizes x backends.

Prints a Markdown table and writes ``bench.csv``, ``bench.md``, ``bench.png`` and the resolved ``config.yaml``
to ``--output-dir``. Settings come from ``--config`` (YAML), then the flags below, then ``--set key=value`` overrides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..benchmark import BACKENDS, BenchConfig, draw_chart, markdown_table, run_benchmark, write_csv
from ..config import save_config
from ..utils.io import atomic_write_text
from ..utils.optional import available, install_hint
from .common import add_config_args, resolve_config

# flag -> config key; list flags take comma-separated values.
_FLAGS = {"models": "models", "sizes": "sizes", "batch_sizes": "batch_sizes", "backends": "backends",
          "rounds": "rounds", "warmup": "warmup", "threads": "threads", "weights": "weights",
          "output_dir": "output_dir"}
_LIST_FLAGS = ("models", "sizes", "batch_sizes", "backends")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark inference speed", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="rounds=20")
    parser.add_argument("--models", help="comma-separated model names (default eupe_vits16)")
    parser.add_argument("--sizes", help="comma-separated square input sizes (default 256)")
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--backends", help=f"comma-separated, from: {', '.join(BACKENDS)} "
                        "(default eager,onnxruntime,onnxruntime-int8)")
    parser.add_argument("--rounds", type=int, help="timed rounds, interleaved across backends (default 10)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up calls per backend and shape (default 3)")
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (0: default)")
    parser.add_argument("--weights", help="weights to load (default 'random': speed does not depend on them)")
    parser.add_argument("--output-dir", help="where to write bench.csv/.md/.png (default bench_results)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    flags = []
    for attr, key in _FLAGS.items():
        value = getattr(args, attr)
        if value is None:
            continue
        flags.append(f"{key}=[{value}]" if attr in _LIST_FLAGS else f"{key}={value}")
    return resolve_config(BenchConfig, args, flags)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
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
    return 0 if any(r.times_ms for r in results) else 1
