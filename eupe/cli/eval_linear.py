"""``eupe eval linear``: linear probe on frozen features (class token, optionally + mean patch token), with a
learning-rate sweep chosen on a held-out part of train and reported on val; saves the head as head.pt.
"""

from __future__ import annotations

import argparse

from ..eval.linear import LinearRunConfig, run_linear
from .eval_common import SPLIT_FLAGS, add_feature_eval_command

PROBE_FLAGS = {
    "linear.feature_sets": "'+'-joined stored keys to try",
    "linear.learning_rates": "learning rates of the sweep (DINOv2's grid)",
    "linear.epochs": "training epochs",
    "linear.holdout_fraction": "part of train for choosing the head",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    add_feature_eval_command(subparsers, "linear", LinearRunConfig, run_linear, description=__doc__,
                            help_text="linear probe with a learning-rate sweep", example="linear.epochs=20",
                            output_help="where head.pt, config.yaml and results go",
                            flags={"inputs": SPLIT_FLAGS, "probe": PROBE_FLAGS})
