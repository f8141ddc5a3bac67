"""``eupe eval zeroshot``: class token -> the checkpoint's (or --head file's) adapter head into a teacher's space
-> cosine with class embeddings from that teacher's text tower (.npy/.safetensors, one row per class) -> top-k.
"""

from __future__ import annotations

import argparse

from ..eval.zeroshot import ZeroShotRunConfig, run_zeroshot
from .common import flag_overrides
from .eval_common import finish_feature_eval_parser, run_feature_eval


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("zeroshot", help="zero-shot classification through an adapter head",
                                   description=__doc__)
    parser.add_argument("--data", default=None, help="labelled images (class folders / list file) or feature folder")
    parser.add_argument("--class-embeddings", default=None, help=".npy/.safetensors [num_classes, dim]")
    parser.add_argument("--class-names", default=None, help="text file, one class name per embedding row")
    parser.add_argument("--head", default=None, help="adapter head file (projectors.<teacher>.cls.*); "
                        "default: the checkpoint's")
    parser.add_argument("--teacher", default=None, help="which teacher's head (default: the only/first one)")
    parser.add_argument("--output-dir", required=True, help="where config.yaml and results go")
    finish_feature_eval_parser(parser, run)


def run(args: argparse.Namespace) -> int:
    return run_feature_eval(args, ZeroShotRunConfig, run_zeroshot,
                            flag_overrides(args, ("class_embeddings", "class_names", "head", "teacher")))
