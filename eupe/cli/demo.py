"""``eupe demo``: the three EUPE stages end to end on real offline CNN teachers and real images, then k-NN."""

from __future__ import annotations

import argparse

from .common import add_shipped_config_args, print_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the CPU distillation demo (3 stages + k-NN table)",
                                   description=__doc__)
    add_shipped_config_args(parser, "demo", "stage1.train.iterations=50 --set output_dir=runs/d", default="distill")
    parser.add_argument("--curve", metavar="N1,N2,...", type=_iterations, default=None,
                        help="instead of one run, one per stage-1 budget (e.g. 75,150,300,600): proxy and student "
                             "k-NN against stage-1 compute, written as curve.json and curve.png")
    parser.set_defaults(func=run)


def _iterations(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated iteration counts such as 75,150,300, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive iteration counts such as 75,150,300, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo.distill import format_table, load_demo_config, run_demo

    cfg = load_demo_config(args.config, args.overrides)
    if args.print_config:
        return print_config(cfg)
    if args.curve:
        from ..demo.curve import run_compute_curve

        curve = run_compute_curve(cfg, args.curve)
        for point in curve["points"]:
            print(f"stage 1 x {point['stage1_iterations']:5d}: proxy {point['proxy']['top1']:5.1f} "
                  f"{point['proxy']['ci95']}, student {point['student']['top1']:5.1f} {point['student']['ci95']}")
        print(f"curve: {Path(cfg.output_dir) / 'curve.json'}  chart: {Path(cfg.output_dir) / 'curve.png'}")
        return 0
    report = run_demo(cfg)
    print(format_table(report["knn_top1"], report["knn_top1_ci95"]))
    print(f"total {report['total_s']:.0f}s  " + "  ".join(f"{k}: {v:.0f}s" for k, v in report["times_s"].items()))
    print(f"results: {Path(cfg.output_dir) / 'results.json'}  chart: {Path(cfg.output_dir) / 'knn.png'}")
    return 0
