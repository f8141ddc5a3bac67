"""``eupe eval linear``: linear probe on frozen features (class token, optionally + mean patch token), with a
learning-rate sweep chosen on a held-out part of train and reported on val; saves the head as head.pt.
"""

from __future__ import annotations

import argparse

from ..eval.linear import LinearRunConfig, run_linear
from .common import flag_overrides
from .eval_common import add_split_args, finish_feature_eval_parser, run_feature_eval


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("linear", help="linear probe with a learning-rate sweep", description=__doc__)
    add_split_args(parser)
    parser.add_argument("--output-dir", required=True, help="where head.pt, config.yaml and results go")
    g = parser.add_argument_group("probe")
    g.add_argument("--feature-sets", nargs="+", default=None,
                   help="'+'-joined stored keys to try (default: cls cls+patch_mean)")
    g.add_argument("--learning-rates", type=float, nargs="+", default=None, help="default: DINOv2's 1e-5..0.1 grid")
    g.add_argument("--epochs", type=int, default=None, help="default 10")
    g.add_argument("--holdout-fraction", type=float, default=None, help="part of train for choosing (default 0.1)")
    finish_feature_eval_parser(parser, run)


def run(args: argparse.Namespace) -> int:
    probe_flags = ("feature_sets", "learning_rates", "epochs", "holdout_fraction")
    return run_feature_eval(args, LinearRunConfig, run_linear, flag_overrides(args, probe_flags, "linear."))
