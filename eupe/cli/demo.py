"""``eupe demo``: the three EUPE stages end to end on real offline CNN teachers and OpenClipart, then k-NN."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the CPU distillation demo (3 stages + k-NN table)",
                                   description=__doc__)
    parser.add_argument("--config", default="demo", help="demo config name or YAML path (default: demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value, e.g. --set stage1.train.iterations=50 --set output_dir=runs/d")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distill.config import resolve_config_path

    return run_demo_config(resolve_config_path(args.config), args.overrides, print_only=args.print_config)


def run_demo_config(path: Path, overrides: Sequence[str], *, print_only: bool = False) -> int:
    """Loads a demo config, runs it and prints the k-NN table (shared by ``eupe demo`` and ``eupe distill``)."""
    import yaml

    from ..config import to_dict
    from ..distill.demo import format_table, load_demo_config, run_demo

    cfg = load_demo_config(path, overrides)
    if print_only:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    report = run_demo(cfg)
    print(format_table(report["knn_top1"]))
    print(f"total {report['total_s']:.0f}s  " + "  ".join(f"{k}: {v:.0f}s" for k, v in report["times_s"].items()))
    print(f"results: {Path(cfg.output_dir) / 'results.json'}  chart: {Path(cfg.output_dir) / 'knn.png'}")
    return 0
