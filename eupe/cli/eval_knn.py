"""``eupe eval knn``: k-NN classification on class tokens, the paper's protocol (L2, k=10, majority vote) and the
reference code's (cosine, T=0.07 weighted vote, k=10/20/100/200). Inputs: an ImageNet-style folder
(``--data ROOT`` with ``train/<class>/*`` and ``val/<class>/*``) or feature folders from ``eupe extract``.
"""

from __future__ import annotations

import argparse

from ..eval.knn import PROTOCOLS, TIE_BREAKS, KnnRunConfig, run_knn
from .common import (add_backbone_args, add_config_args, autocast_for, flag_overrides, lazy_backbone, model_id,
                     resolve_config, resolve_device)
from .extract import EXTRACT_FLAGS, add_extract_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knn", help="k-NN classification (paper + reference protocols)",
                                   description=__doc__)
    parser.add_argument("--data", default=None, help="root holding train/<class>/* and val/<class>/*")
    parser.add_argument("--train", default=None, help="train feature folder or image source (instead of --data)")
    parser.add_argument("--val", default=None, help="val feature folder or image source (instead of --data)")
    parser.add_argument("--output-dir", required=True, help="where config.yaml and results.json/.csv go")
    parser.add_argument("--feature-key", default=None, help="stored features to use (default cls)")
    g = parser.add_argument_group("k-NN")
    g.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: both")
    g.add_argument("--paper-ks", type=int, nargs="+", default=None, help="k of the majority vote (default 10)")
    g.add_argument("--reference-ks", type=int, nargs="+", default=None,
                   help="k of the weighted vote (default 10 20 100 200)")
    g.add_argument("--temperature", type=float, default=None, help="weighted-vote temperature (default 0.07)")
    g.add_argument("--tie-break", choices=TIE_BREAKS, default=None, help="majority-vote ties (default nearest)")
    g.add_argument("--query-chunk", type=int, default=None, help="queries per chunk (default 1024)")
    g.add_argument("--train-chunk", type=int, default=None, help="train rows per chunk (default 65536)")
    add_backbone_args(parser)
    add_extract_args(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = [
        *flag_overrides(args, ("data", "train", "val", "feature_key", "model", "weights")),
        *flag_overrides(args, EXTRACT_FLAGS, "extract."),
        *flag_overrides(args, ("protocol", "paper_ks", "reference_ks", "temperature", "tie_break", "query_chunk",
                               "train_chunk"), "knn."),
    ]
    config = resolve_config(KnnRunConfig, args, overrides)
    device = resolve_device(args.device)
    run_knn(config, args.output_dir, backbone=lazy_backbone(args), device=device,
            autocast=autocast_for(args, device), model_id=model_id(args))
    return 0
