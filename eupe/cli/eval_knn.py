"""``eupe eval knn``: k-NN classification on class tokens, the paper's protocol (L2, k=10, majority vote) and the
reference code's (cosine, T=0.07 weighted vote, k=10/20/100/200). Inputs: an ImageNet-style folder
(``--data ROOT`` with ``train/<class>/*`` and ``val/<class>/*``) or feature folders from ``eupe extract``.
"""

from __future__ import annotations

import argparse

from ..eval.knn import KnnRunConfig, run_knn
from .eval_common import SPLIT_FLAGS, add_feature_eval_command

KNN_FLAGS = {
    "feature_key": "stored features to use",
    "knn.protocol": "protocol(s) to run",
    "knn.paper_ks": "k of the majority vote",
    "knn.reference_ks": "k of the weighted vote",
    "knn.temperature": "weighted-vote temperature",
    "knn.tie_break": "majority-vote ties",
    "knn.query_chunk": "queries per chunk",
    "knn.train_chunk": "train rows per chunk",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    add_feature_eval_command(subparsers, "knn", KnnRunConfig, run_knn, description=__doc__,
                            help_text="k-NN classification (paper + reference protocols)",
                            example="knn.temperature=0.1", output_help="where config.yaml and results.json/.csv go",
                            flags={"inputs": SPLIT_FLAGS, "k-NN": KNN_FLAGS})
