"""``eupe eval keypoints``: SPair-71k training-free keypoint transfer (PCK@0.1), per category and overall.

Images are resized to 512x512 (``--image-size``), features bilinearly upsampled and matched by cosine argmax;
100 pairs per category of the ``test`` split by default (``--set split=val``, ``--set categories=[cat,dog]``).
"""

from __future__ import annotations

import argparse

from .eval_segmentation import add_probe_args, run_protocol
from .common import flag_overrides, resolve_config

FLAGS = ("root", "pairs_per_category", "image_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keypoints", help="SPair-71k keypoint correspondence (PCK@0.1)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_args(parser, trained=False)
    parser.add_argument("--pairs-per-category", type=int, default=None, help="pairs per category (default 100)")
    parser.add_argument("--image-size", type=int, default=None, help="side of the resized images (default 512)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.keypoints import KeypointsConfig, run_keypoints

    cfg = resolve_config(KeypointsConfig, args, flag_overrides(args, FLAGS))
    return run_protocol(args, cfg, run_keypoints, cfg.root)
