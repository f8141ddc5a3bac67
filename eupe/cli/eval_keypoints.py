"""``eupe eval keypoints``: SPair-71k training-free keypoint transfer (PCK@0.1), per category and overall.

Images are resized to 512x512 (``--image-size``), features bilinearly upsampled and matched by cosine argmax;
100 pairs per category of the ``test`` split by default (``--set split=val``, ``--set categories=[cat,dog]``).
"""

from __future__ import annotations

import argparse

from .common import flag_overrides, resolve_config
from .eval_common import add_probe_command, run_protocol

FLAGS = ("root", "pairs_per_category", "image_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_probe_command(subparsers, "keypoints", "SPair-71k keypoint correspondence (PCK@0.1)", __doc__, run,
                               trained=False)
    parser.add_argument("--pairs-per-category", type=int, default=None, help="pairs per category (default 100)")
    parser.add_argument("--image-size", type=int, default=None, help="side of the resized images (default 512)")


def run(args: argparse.Namespace) -> int:
    from ..eval.keypoints import KeypointsConfig, run_keypoints

    cfg = resolve_config(KeypointsConfig, args, flag_overrides(args, FLAGS))
    return run_protocol(args, cfg, run_keypoints, cfg.root)
