"""``eupe eval linear``: linear probe on frozen features (class token, optionally + mean patch token), with a
learning-rate sweep chosen on a held-out part of train and reported on val; saves the head as head.pt.
"""

from __future__ import annotations

import argparse

from ..eval.linear import LinearRunConfig, run_linear
from .common import (add_backbone_args, add_config_args, autocast_for, flag_overrides, lazy_backbone, model_id,
                     resolve_config, resolve_device)
from .extract import EXTRACT_FLAGS, add_extract_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("linear", help="linear probe with a learning-rate sweep", description=__doc__)
    parser.add_argument("--data", default=None, help="root holding train/<class>/* and val/<class>/*")
    parser.add_argument("--train", default=None, help="train feature folder or image source (instead of --data)")
    parser.add_argument("--val", default=None, help="val feature folder or image source (instead of --data)")
    parser.add_argument("--output-dir", required=True, help="where head.pt, config.yaml and results go")
    g = parser.add_argument_group("probe")
    g.add_argument("--feature-sets", nargs="+", default=None,
                   help="'+'-joined stored keys to try (default: cls cls+patch_mean)")
    g.add_argument("--learning-rates", type=float, nargs="+", default=None, help="default: DINOv2's 1e-5..0.1 grid")
    g.add_argument("--epochs", type=int, default=None, help="default 10")
    g.add_argument("--holdout-fraction", type=float, default=None, help="part of train for choosing (default 0.1)")
    add_backbone_args(parser)
    add_extract_args(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = [
        *flag_overrides(args, ("data", "train", "val", "model", "weights")),
        *flag_overrides(args, EXTRACT_FLAGS, "extract."),
        *flag_overrides(args, ("feature_sets", "learning_rates", "epochs", "holdout_fraction"), "linear."),
    ]
    config = resolve_config(LinearRunConfig, args, overrides)
    device = resolve_device(args.device)
    run_linear(config, args.output_dir, backbone=lazy_backbone(args), device=device,
               autocast=autocast_for(args, device), model_id=model_id(args))
    return 0
