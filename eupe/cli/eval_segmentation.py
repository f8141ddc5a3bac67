"""``eupe eval segmentation``: ADE20K linear probe (BatchNorm + 1x1 linear head on frozen patch tokens), mIoU.

Defaults are the paper's (40k its, batch 16, AdamW LR 1e-3, WD 1e-3, 512 crops, sliding windows 512/341); every
setting can be changed with ``--config run.yaml`` and ``--set key=value`` (e.g. ``--set train.crop_size=256``).
"""

from __future__ import annotations

import argparse

from ..eval.segmentation import SegmentationConfig, run_segmentation
from .eval_common import TRAINING_FLAGS, add_probe_command


def register(subparsers: argparse._SubParsersAction) -> None:
    add_probe_command(subparsers, "segmentation", SegmentationConfig, run_segmentation, description=__doc__,
                     help_text="ADE20K linear segmentation (mIoU)", example="train.crop_size=256",
                     flags={"training": TRAINING_FLAGS})
