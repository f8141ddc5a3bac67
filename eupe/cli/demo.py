"""``eupe demo``: the three EUPE stages end to end on real offline CNN teachers and real images, then k-NN."""

from __future__ import annotations

import argparse

from ..config import shipped_configs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the CPU distillation demo (3 stages + k-NN table)",
                                   description=__doc__)
    parser.add_argument("--config", default="distill",
                        help=f"a shipped demo config ({', '.join(shipped_configs('demo'))}) or a YAML path "
                             "(default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value, e.g. --set stage1.train.iterations=50 --set output_dir=runs/d")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from ..config import to_dict
    from ..demo.distill import format_table, load_demo_config, run_demo

    cfg = load_demo_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    report = run_demo(cfg)
    print(format_table(report["knn_top1"], report["knn_top1_ci95"]))
    print(f"total {report['total_s']:.0f}s  " + "  ".join(f"{k}: {v:.0f}s" for k, v in report["times_s"].items()))
    print(f"results: {Path(cfg.output_dir) / 'results.json'}  chart: {Path(cfg.output_dir) / 'knn.png'}")
    return 0
