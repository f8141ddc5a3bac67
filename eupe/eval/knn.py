"""k-NN classification on frozen features, both protocols of the paper (§9.1).

* ``paper``: L2 distance on the raw class tokens, majority vote (k = 10).
* ``reference``: cosine similarity of L2-normalised features, each neighbour votes ``exp(sim / T)`` with
  T = 0.07 (DINOv3's kNN), k in 10/20/100/200.

The search never materialises the full query x train similarity matrix: queries and the train set are both
processed in chunks and a running top-k is kept per query, so 1.28M x 768 train features fit in memory as long
as the features themselves do.

Majority-vote ties (two classes with the same number of votes among the k neighbours) are broken by
``tie_break``: ``nearest`` (default) picks the tied class whose closest neighbour ranks first; ``lowest_label``
picks the smallest class index (scikit-learn's rule). Classes that got no vote are never predicted (their
prediction slots are ``-1``), so top-5 never credits a class absent from the neighbours.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import torch
from torch import Tensor

from ..extract import ExtractConfig, require_finite
from .backbone import EvalBackbone
from .classification import ClassificationResult, evaluate_predictions, open_labelled_splits
from .results import write_run_outputs

KnnProtocol = Literal["paper", "reference", "both"]
TieBreak = Literal["nearest", "lowest_label"]
PROTOCOLS: tuple[str, ...] = get_args(KnnProtocol)
TIE_BREAKS: tuple[str, ...] = get_args(TieBreak)
logger = logging.getLogger(__name__)


@dataclass
class KnnConfig:
    """k-NN hyper-parameters; defaults are the paper's and the reference code's."""

    protocol: KnnProtocol = "both"
    paper_ks: list[int] = field(default_factory=lambda: [10])
    reference_ks: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07
    tie_break: TieBreak = "nearest"  # majority vote only
    topk: list[int] = field(default_factory=lambda: [1, 5])
    query_chunk: int = 1024
    train_chunk: int = 65536

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {self.tie_break!r}")
        counts = self.paper_ks + self.reference_ks + self.topk + [self.query_chunk, self.train_chunk]
        if not (math.isfinite(self.temperature) and self.temperature > 0) or min(counts) < 1:
            raise ValueError("temperature (finite), every k, topk and the chunk sizes must be positive")


def effective_k(k: int, num_train: int) -> int:
    """The number of neighbours a k-NN with ``k`` uses on ``num_train`` training images."""
    return min(k, num_train)


def knn_search(
    train: Tensor, queries: Tensor, k: int, *, metric: str = "cosine", query_chunk: int = 1024,
    train_chunk: int = 65536,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest train rows of every query: ``(scores [Q, k], indices [Q, k])``, best first.

    ``metric``: ``cosine`` (cosine similarity) or ``l2`` (score = minus the squared L2 distance).
    """
    return knn_search_many(train, queries, {metric: k}, query_chunk=query_chunk, train_chunk=train_chunk)[metric]


def knn_search_many(
    train: Tensor, queries: Tensor, ks: dict[str, int], *, query_chunk: int = 1024, train_chunk: int = 65536,
) -> dict[str, tuple[Tensor, Tensor]]:
    """:func:`knn_search` for several metrics (``{"l2": k, "cosine": k}``) in one pass over the train set.

    Both scores derive from the same dot products (``-|q - t|^2 = 2 q.t - |t|^2 - |q|^2`` and
    ``cos = q.t / (|q| |t|)``), so the matrix product, the dominant cost, is computed once. Memory is
    ``O(query_chunk * (train_chunk + k))`` beyond the inputs; query-only terms are applied after the search.
    """
    unknown = set(ks) - {"cosine", "l2"}
    if unknown:
        raise ValueError(f"metric must be 'cosine' or 'l2', got {sorted(unknown)}")
    ks = {m: effective_k(k, train.shape[0]) for m, k in ks.items()}
    train_norm = train.norm(dim=1)
    post = {"l2": lambda q: -q.pow(2).sum(1, keepdim=True), "cosine": lambda q: q.norm(dim=1, keepdim=True)}
    out: dict[str, tuple[list[Tensor], list[Tensor]]] = {m: ([], []) for m in ks}
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0 : q0 + query_chunk]
        best = {m: (q.new_empty(q.shape[0], 0), torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device))
                for m in ks}
        for t0 in range(0, train.shape[0], train_chunk):
            dots = q @ train[t0 : t0 + train_chunk].T
            tn = train_norm[t0 : t0 + train_chunk]
            for j, (metric, k) in enumerate(ks.items()):
                base = dots if j == len(ks) - 1 else dots.clone()  # the last metric may overwrite dots
                scores = base.mul_(2).sub_(tn.pow(2)) if metric == "l2" else base.div_(tn.clamp_min(1e-12))
                s, i = scores.topk(min(k, scores.shape[1]), dim=1)
                best_s, best_i = best[metric]
                merged_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
                best[metric] = (merged_s, torch.cat([best_i, i + t0], 1).gather(1, order))
        for metric, (best_s, best_i) in best.items():
            term = post[metric](q)
            out[metric][0].append(best_s + term if metric == "l2" else best_s / term.clamp_min(1e-12))
            out[metric][1].append(best_i)
    return {m: (torch.cat(s), torch.cat(i)) for m, (s, i) in out.items()}


def majority_vote(neighbour_labels: Tensor, num_classes: int, topk: int, tie_break: str = "nearest") -> Tensor:
    """Ranked classes ``[Q, topk]`` by vote count among neighbours (given nearest first); see module docstring."""
    q, k = neighbour_labels.shape
    votes = torch.zeros(q, num_classes, device=neighbour_labels.device, dtype=torch.float64)  # exact integers
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=votes.dtype))
    if tie_break == "nearest":
        # rank of each class's closest neighbour (k where absent); scatter_reduce amin over neighbour ranks
        rank = torch.arange(k, device=votes.device).expand(q, k)
        first = torch.full_like(votes, float(k)).scatter_reduce_(1, neighbour_labels, rank.to(votes.dtype), "amin")
        key = votes * (k + 1) + (k - first)
    elif tie_break == "lowest_label":
        key = votes * (num_classes + 1) + (num_classes - torch.arange(num_classes, device=votes.device))
    else:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    return _ranked(key, votes > 0, topk)


def weighted_vote(neighbour_labels: Tensor, similarities: Tensor, num_classes: int, topk: int,
                  temperature: float = 0.07) -> Tensor:
    """Ranked classes ``[Q, topk]`` by the sum of ``exp(sim / T)`` over each class's neighbours."""
    scores = torch.zeros(neighbour_labels.shape[0], num_classes, device=neighbour_labels.device)
    scores.scatter_add_(1, neighbour_labels, similarities.div(temperature).exp().to(scores.dtype))
    return _ranked(scores, scores > 0, topk)


def _ranked(key: Tensor, present: Tensor, topk: int) -> Tensor:
    values, classes = key.masked_fill(~present, float("-inf")).topk(min(topk, key.shape[1]), dim=1)
    return classes.masked_fill(values == float("-inf"), -1)


def knn_classify(
    train: Tensor, train_labels: Tensor, queries: Tensor, num_classes: int, config: KnnConfig | None = None
) -> dict[str, dict[int, Tensor]]:
    """Ranked class predictions ``{protocol: {k: [Q, max(topk)]}}`` for the configured protocols."""
    config = config or KnnConfig()
    config.validate()
    require_finite(train, "k-NN training features")
    require_finite(queries, "k-NN query features")
    train_labels = train_labels.to(train.device).long()
    topk = max(config.topk)
    ks = {}
    if config.protocol in ("paper", "both"):
        ks["l2"] = max(config.paper_ks)
    if config.protocol in ("reference", "both"):
        ks["cosine"] = max(config.reference_ks)
    found = knn_search_many(train.float(), queries.float(), ks, query_chunk=config.query_chunk,
                            train_chunk=config.train_chunk)
    out: dict[str, dict[int, Tensor]] = {}
    if "l2" in found:
        labels = train_labels[found["l2"][1]]
        out["paper"] = {k: majority_vote(labels[:, :k], num_classes, topk, config.tie_break)
                        for k in config.paper_ks}
    if "cosine" in found:
        sims, idx = found["cosine"]
        labels = train_labels[idx]
        out["reference"] = {k: weighted_vote(labels[:, :k], sims[:, :k], num_classes, topk, config.temperature)
                            for k in config.reference_ks}
    return out


def evaluate_knn(
    train: Tensor, train_labels: Tensor, queries: Tensor, query_labels: Tensor, class_names: Sequence[str],
    config: KnnConfig | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs :func:`knn_classify` and scores it: ``(results, per-class table rows)`` for ``write_run_outputs``.

    ``results[protocol]["k=<k>"]`` holds top-1/top-5 (%) and the mean per-class top-1, under the k that was used:
    a k above the number of training images uses them all, so it is reported as ``k=<that number>`` with the
    requested values in ``requested_k`` (and a logged warning); ks that end equal share one entry.
    """
    config = config or KnnConfig()
    if train.shape[1:] != queries.shape[1:]:
        raise ValueError(f"Train features are {tuple(train.shape[1:])} but queries are {tuple(queries.shape[1:])}; "
                         "extract both splits with the same model and settings")
    predictions = knn_classify(train, train_labels, queries, len(class_names), config)
    results: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    for protocol, by_k in predictions.items():
        results[protocol] = {}
        for k, ranked in by_k.items():
            used = effective_k(k, train.shape[0])
            entry = results[protocol].get(f"k={used}")
            if entry is None:
                res: ClassificationResult = evaluate_predictions(ranked, query_labels, class_names, config.topk)
                entry = results[protocol][f"k={used}"] = res.summary()
                table.extend(dict(protocol=protocol, k=used, **row) for row in res.per_class)
            if used != k:
                entry.setdefault("requested_k", []).append(k)
        clamped = [k for k in by_k if effective_k(k, train.shape[0]) != k]
        if clamped:
            logger.warning("%s k-NN: k=%s exceed the %d training images, so every training image votes: reported "
                           "as k=%d", protocol, ", ".join(map(str, clamped)), train.shape[0], train.shape[0])
    return results, table


@dataclass
class KnnRunConfig:
    """A full ``eupe eval knn`` run: inputs, backbone (recorded), extraction and k-NN settings."""

    data: str | None = None  # ImageNet-style root with train/ and val/
    train: str | None = None  # feature folder or image source (overrides data/train)
    val: str | None = None
    feature_key: str = "cls"
    model: str | None = None
    weights: str | None = None
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)


def run_knn(backbone: EvalBackbone, config: KnnRunConfig, output_dir: str | Path) -> dict[str, Any]:
    """Features (read or extracted) -> k-NN -> ``config.yaml``, ``results.json``, ``results.csv`` in
    ``output_dir``; prints and returns the results."""
    config.knn.validate()
    splits = open_labelled_splits(config.data, config.train, config.val, output_dir=output_dir, backbone=backbone,
                                  extract=config.extract, protocol="k-NN")
    train, val, key = splits.train, splits.val, config.feature_key
    results, table = evaluate_knn(train.load(key).flatten(1).to(backbone.device), splits.train_labels,
                                  val.load(key).flatten(1).to(backbone.device), splits.val_labels,
                                  splits.class_names, config.knn)
    results = {"num_train": len(train), "num_val": len(val), "num_classes": len(splits.class_names),
               "skipped": {"train": len(train.skipped), "val": len(val.skipped)}, "backbone": train.identity,
               **results}
    heads = []
    for protocol, ks in (("paper", config.knn.paper_ks), ("reference", config.knn.reference_ks)):
        if protocol in results:
            k = effective_k(min(ks), len(train))
            scores = " ".join(f"top{t} {results[protocol][f'k={k}'][f'top{t}']:.2f}" for t in config.knn.topk)
            heads.append(f"{protocol} k={k}: {scores}")
    summary = f"knn: {' | '.join(heads)} ({len(train)} train, {len(val)} val) -> {output_dir}"
    write_run_outputs(output_dir, config=config, results=results, summary=summary, table=table)
    return results
