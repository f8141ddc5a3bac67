"""``eupe eval depth``: NYUv2 linear depth probe (BatchNorm + linear head over 256 depth bins), RMSE and co.

Reads the BTS layout: ``<data-root>/<data.train_list>`` and ``<data.test_list>`` (lines ``rgb depth focal``,
paths under ``data.train_dir`` / ``data.test_dir``). Defaults are the paper's (38.4k its, batch 16, AdamW LR 3e-4,
WD 1e-3, 416x544 crops, Eigen crop, flip TTA); change them with ``--config`` and ``--set key=value``.
"""

from __future__ import annotations

import argparse

from ..eval.depth import DepthConfig, run_depth
from .eval_common import TRAINING_FLAGS, add_probe_command


def register(subparsers: argparse._SubParsersAction) -> None:
    add_probe_command(subparsers, "depth", DepthConfig, run_depth, description=__doc__,
                     help_text="NYUv2 linear depth (RMSE)", example="eval.flip_tta=false",
                     flags={"training": TRAINING_FLAGS})
