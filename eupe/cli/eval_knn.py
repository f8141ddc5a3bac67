"""``eupe eval knn``: k-NN classification on class tokens, the paper's protocol (L2, k=10, majority vote) and the
reference code's (cosine, T=0.07 weighted vote, k=10/20/100/200). Inputs: an ImageNet-style folder
(``--data ROOT`` with ``train/<class>/*`` and ``val/<class>/*``) or feature folders from ``eupe extract``.
"""

from __future__ import annotations

import argparse

from ..eval.knn import PROTOCOLS, TIE_BREAKS, KnnRunConfig, run_knn
from .common import flag_overrides
from .eval_common import add_split_args, finish_feature_eval_parser, run_feature_eval


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knn", help="k-NN classification (paper + reference protocols)",
                                   description=__doc__)
    add_split_args(parser)
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
    finish_feature_eval_parser(parser, run)


def run(args: argparse.Namespace) -> int:
    return run_feature_eval(args, KnnRunConfig, run_knn, [
        *flag_overrides(args, ("feature_key",)),
        *flag_overrides(args, ("protocol", "paper_ks", "reference_ks", "temperature", "tie_break", "query_chunk",
                               "train_chunk"), "knn."),
    ])
