"""Where the time of one ``forward_features`` goes: torch profiler, operators by self CPU time, plus throughput.

    python benchmarks/profile_forward.py --model eupe_vits16 --batch 8 --size 256 --threads 2

The shares it prints are the ones the README quotes for the eager forward (profiling overhead lowers img/s a
little; use bench_forward.py for throughput comparisons).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import eupe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eupe_vits16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = eupe.create_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.inference_mode():
        for _ in range(2):
            model.forward_features(x)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.rounds):
                model.forward_features(x)
        elapsed = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads: "
          f"{args.batch * args.rounds / elapsed:.1f} img/s under the profiler\n")
    print("| operator | share of self CPU time | calls per forward |")
    print("|---|---|---|")
    for e in events[: args.top]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f}% | {e.count // args.rounds} |")


if __name__ == "__main__":
    main()
