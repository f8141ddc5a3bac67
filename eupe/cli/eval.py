"""``eupe eval PROTOCOL``: the paper's evaluation protocols, one module per protocol under ``eupe.cli``."""

from __future__ import annotations

import argparse
import importlib

# Each module eupe.cli.eval_<protocol> exposes register(protocol_subparsers).
PROTOCOLS = ("knn", "linear", "zeroshot", "segmentation", "depth", "keypoints")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="run an evaluation protocol on a frozen backbone", description=__doc__)
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name in PROTOCOLS:
        importlib.import_module(f"eupe.cli.eval_{name}").register(protocols)
