"""``eupe eval segmentation``: ADE20K linear probe (BatchNorm + 1x1 linear head on frozen patch tokens), mIoU.

Defaults are the paper's (40k its, batch 16, AdamW LR 1e-3, WD 1e-3, 512 crops, sliding windows 512/341); every
setting can be changed with ``--config run.yaml`` and ``--set key=value`` (e.g. ``--set train.crop_size=256``).
"""

from __future__ import annotations

import argparse

from .eval_common import add_probe_command, run_trained_probe


def register(subparsers: argparse._SubParsersAction) -> None:
    add_probe_command(subparsers, "segmentation", "ADE20K linear segmentation (mIoU)", __doc__, run)


def run(args: argparse.Namespace) -> int:
    from ..eval.segmentation import SegmentationConfig, run_segmentation

    return run_trained_probe(args, SegmentationConfig, run_segmentation)
