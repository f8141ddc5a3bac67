"""``eupe eval zeroshot``: class token -> the checkpoint's (or --head file's) adapter head into a teacher's space
-> cosine with class embeddings from that teacher's text tower (.npy/.safetensors, one row per class) -> top-k.
"""

from __future__ import annotations

import argparse

from ..eval.zeroshot import ZeroShotRunConfig, run_zeroshot
from .eval_common import add_feature_eval_command

ZEROSHOT_FLAGS = {
    "data": "labelled images (class folders / list file) or feature folder",
    "class_embeddings": ".npy/.safetensors [num_classes, dim]",
    "class_names": "text file, one class name per embedding row; unset: rows are the class indices",
    "head": "adapter head file (projectors.<teacher>.cls.*); unset: the checkpoint's",
    "teacher": "which teacher's head; unset: the only/first one",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    add_feature_eval_command(subparsers, "zeroshot", ZeroShotRunConfig, run_zeroshot, description=__doc__,
                            help_text="zero-shot classification through an adapter head", example="topk=[1,10]",
                            output_help="where config.yaml and results go", flags={"inputs": ZEROSHOT_FLAGS})
