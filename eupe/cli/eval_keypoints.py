"""``eupe eval keypoints``: SPair-71k training-free keypoint transfer (PCK@0.1), per category and overall.

Images are resized to 512x512 (``--image-size``), features bilinearly upsampled and matched by cosine argmax;
100 pairs per category of the ``test`` split by default (``--set split=val``, ``--set categories=[cat,dog]``).
"""

from __future__ import annotations

import argparse

from ..eval.keypoints import KeypointsConfig, run_keypoints
from .eval_common import add_probe_command

MATCHING_FLAGS = {
    "pairs_per_category": "pairs per category",
    "image_size": "side of the resized images",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    add_probe_command(subparsers, "keypoints", KeypointsConfig, run_keypoints, root_key="root", description=__doc__,
                     help_text="SPair-71k keypoint correspondence (PCK@0.1)", example="split=val",
                     flags={"matching": MATCHING_FLAGS})
