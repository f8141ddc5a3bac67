"""k-NN speed: 100k x 384 training features, 10k queries, both protocols (paper k=10; reference k up to 200).

Target: under a minute on 2 CPU cores. Usage: python benchmarks/bench_knn.py [--train 100000 --queries 10000]
"""

from __future__ import annotations

import argparse
import time

import torch

from eupe.eval.classification import evaluate_predictions
from eupe.eval.knn import PROTOCOLS, KnnConfig, knn_classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--protocol", default="both", choices=PROTOCOLS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(args.classes, args.dim, generator=g)
    train_labels = torch.randint(0, args.classes, (args.train,), generator=g)
    query_labels = torch.randint(0, args.classes, (args.queries,), generator=g)
    train = (centers[train_labels] + 2 * torch.randn(args.train, args.dim, generator=g)).to(args.device)
    queries = (centers[query_labels] + 2 * torch.randn(args.queries, args.dim, generator=g)).to(args.device)
    config = KnnConfig(protocol=args.protocol)
    start, cpu_start = time.perf_counter(), time.process_time()
    preds = knn_classify(train, train_labels.to(args.device), queries, args.classes, config)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    class_names = [str(c) for c in range(args.classes)]
    for protocol, by_k in preds.items():
        accs = ", ".join(f"k={k}: {evaluate_predictions(p.cpu(), query_labels, class_names, (1,)).topk[1]:.1f}%"
                         for k, p in by_k.items())
        print(f"{protocol}: {accs}")
    print(f"knn {args.protocol}: {args.train} x {args.dim} train, {args.queries} queries, {args.threads} threads: "
          f"{elapsed:.1f} s ({'OK' if elapsed < 60 else 'SLOWER THAN'} the 60 s target); CPU time {cpu:.1f} s "
          f"(~{cpu / args.threads:.1f} s wall when the {args.threads} cores are not shared)")


if __name__ == "__main__":
    main()
