"""``eupe eval zeroshot``: class token -> the checkpoint's (or --head file's) adapter head into a teacher's space
-> cosine with class embeddings from that teacher's text tower (.npy/.safetensors, one row per class) -> top-k.
"""

from __future__ import annotations

import argparse

from ..eval.zeroshot import ZeroShotRunConfig, run_zeroshot
from .common import (add_backbone_args, add_config_args, autocast_for, flag_overrides, lazy_backbone, model_id,
                     resolve_config, resolve_device)
from .extract import EXTRACT_FLAGS, add_extract_args


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
    add_backbone_args(parser)
    add_extract_args(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = [
        *flag_overrides(args, ("data", "class_embeddings", "class_names", "head", "teacher", "model", "weights")),
        *flag_overrides(args, EXTRACT_FLAGS, "extract."),
    ]
    config = resolve_config(ZeroShotRunConfig, args, overrides)
    device = resolve_device(args.device)
    run_zeroshot(config, args.output_dir, backbone=lazy_backbone(args), device=device,
                 autocast=autocast_for(args, device), model_id=model_id(args))
    return 0
