"""Where the time of one ``forward_features`` goes, by operator: PyTorch eager (torch profiler), ONNX Runtime
(its own profiler, on the ``eupe export --optimize`` graph) or the reference implementation (torch profiler).

    python benchmarks/profile_forward.py --model eupe_vits16 --batch 8 --size 256 --threads 2
    python benchmarks/profile_forward.py --backend onnxruntime --threads 2
    python benchmarks/profile_forward.py --backend reference --reference-repo PATH/TO/facebookresearch-EUPE

The shares and milliseconds it prints are the ones the README quotes (profiling overhead lowers img/s a little;
use bench_forward.py and ``eupe bench`` for throughput comparisons).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import eupe


def profile_eager(model: torch.nn.Module, x: torch.Tensor, rounds: int) -> tuple[dict[str, tuple[float, int]], float]:
    """(operator -> (self ms per forward, calls per forward), seconds per forward)."""
    with torch.inference_mode():
        for _ in range(2):
            model.forward_features(x)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                model.forward_features(x)
        elapsed = time.perf_counter() - start
    ops = {e.key: (e.self_cpu_time_total / 1e3 / rounds, e.count // rounds) for e in prof.key_averages()}
    return ops, elapsed / rounds


def profile_onnxruntime(model: torch.nn.Module, x: torch.Tensor, rounds: int,
                        threads: int | None) -> tuple[dict[str, tuple[float, int]], float]:
    import onnxruntime as ort

    from eupe.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, size=tuple(x.shape[2:]), optimize=True, verify=False)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(2):
            session.run(None, feed)
        options.enable_profiling = True  # a second session, profiling only the timed rounds
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, feed)  # the new session's first run (one-time allocations): left out below
        start = time.perf_counter()
        for _ in range(rounds):
            session.run(None, feed)
        elapsed = time.perf_counter() - start
        events = json.loads(Path(session.end_profiling()).read_text())
    first_run = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    timed_from = first_run["ts"] + first_run["dur"]
    totals: dict[str, float] = collections.Counter()
    calls: dict[str, int] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            totals[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
    return {op: (us / 1e3 / rounds, calls[op] // rounds) for op, us in totals.items()}, elapsed / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eupe_vits16")
    parser.add_argument("--backend", choices=("eager", "onnxruntime", "reference"), default="eager",
                        help="reference: the reference implementation (eager) with the same weights")
    parser.add_argument("--reference-repo", type=Path, default=None, help="--backend reference: a clone of "
                        "facebookresearch/EUPE")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the library's choice)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = eupe.create_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    if args.backend == "reference":
        if args.reference_repo is None:
            parser.error("--backend reference needs --reference-repo PATH (a clone of facebookresearch/EUPE)")
        from bench_forward import load_reference_model  # the sibling script's loader

        ops, seconds = profile_eager(load_reference_model(args.reference_repo, args.model, model.state_dict()), x,
                                     args.rounds)
    elif args.backend == "eager":
        ops, seconds = profile_eager(model, x, args.rounds)
    else:
        ops, seconds = profile_onnxruntime(model, x, args.rounds, args.threads)
    total = sum(ms for ms, _ in ops.values())
    print(f"{args.model} ({args.backend}), batch {args.batch}, {args.size}x{args.size}, "
          f"{args.threads or 'default'} threads: {args.batch / seconds:.1f} img/s under the profiler\n")
    print("| operator | ms per forward | share of operator time | calls per forward |")
    print("|---|---|---|---|")
    for name, (ms, count) in sorted(ops.items(), key=lambda item: -item[1][0])[: args.top]:
        print(f"| {name} | {ms:.1f} | {100 * ms / total:.1f}% | {count} |")


if __name__ == "__main__":
    main()
