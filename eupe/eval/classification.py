"""What the classification protocols (k-NN, linear, zero-shot) share: labelled train/val features, top-k and
per-class accuracy.

Predictions are given as ranked class indices ``[N, K]`` (best first); ``-1`` marks "no class" (e.g. a k-NN
vote that reached fewer than ``K`` classes), which never counts as correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..extract import ExtractConfig, FeatureBackbone, FeatureStore, open_splits, resolve_splits


@dataclass
class ClassificationResult:
    """Top-k accuracies (in %) overall and per class."""

    topk: dict[int, float]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    num_samples: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals: ``top1``, ``top5``..., mean per-class top-1 (over the classes with samples) and the
        sample count."""
        valid = [row["top1"] for row in self.per_class if row["n"] > 0]
        out: dict[str, Any] = {f"top{k}": v for k, v in self.topk.items()}
        out["mean_per_class_top1"] = sum(valid) / len(valid)
        out["num_samples"] = self.num_samples
        return out

    def headline(self) -> str:
        """``top1 <acc>`` and, when evaluated, `` top5 <acc>``, for a run's one-line summary."""
        return f"top1 {self.topk[1]:.2f}" + (f" top5 {self.topk[5]:.2f}" if 5 in self.topk else "")


def rank_scores(scores: Tensor, k: int) -> Tensor:
    """Class indices of the ``k`` highest scores per row, best first (``k`` capped at the number of classes)."""
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def evaluate_predictions(
    ranked: Tensor, labels: Tensor, class_names: Sequence[str], ks: Sequence[int] = (1, 5)
) -> ClassificationResult:
    """Top-k accuracy for each ``k`` in ``ks`` and per-class accuracy of ``ranked`` ``[N, K]`` against ``labels``.

    A ``k`` larger than ``K`` is evaluated with all ``K`` columns (as when there are fewer than 5 classes). A class
    without samples has ``None`` accuracies (undefined, not NaN); no sample at all is a ``ValueError``.
    """
    if ranked.shape[0] != labels.shape[0]:
        raise ValueError(f"{ranked.shape[0]} predictions for {labels.shape[0]} labels")
    if not len(labels):
        raise ValueError("there is no image to evaluate (the validation set is empty, or all of it was skipped)")
    labels = labels.to(ranked.device).long()
    hits = ranked == labels[:, None]  # [N, K]; a label appears at most once per row
    num_classes = len(class_names)
    counts = torch.bincount(labels, minlength=num_classes).cpu()
    topk, per_class_hits = {}, {}
    for k in ks:
        hit_k = hits[:, :k].any(dim=1)
        topk[k] = 100.0 * hit_k.double().mean().item()
        per_class_hits[k] = torch.bincount(labels[hit_k], minlength=num_classes).cpu()
    rows = []
    for c, name in enumerate(class_names):
        n = int(counts[c])
        row: dict[str, Any] = {"class_index": c, "class_name": name, "n": n}
        for k in ks:
            row[f"top{k}"] = 100.0 * int(per_class_hits[k][c]) / n if n else None
        rows.append(row)
    return ClassificationResult(topk, rows, int(labels.shape[0]))


def align_labels(labels: Tensor, class_names: Sequence[str], target_names: Sequence[str], what: str) -> Tensor:
    """Re-indexes ``labels`` (indices into ``class_names``) into ``target_names`` (e.g. val classes -> train
    classes, which may differ when a split lacks some classes). Raises for unlabelled items (label ``-1``) and
    for a class the target does not know."""
    if (labels < 0).any():
        raise ValueError(f"{what} has {int((labels < 0).sum())} unlabelled images; evaluation needs a label for "
                         "every image (class subfolders, or path,label lines in a list file)")
    if list(class_names) == list(target_names):
        return labels
    position = {name: i for i, name in enumerate(target_names)}
    unknown = sorted(set(class_names) - set(position))
    if unknown:
        raise ValueError(f"{what} has classes the training set lacks: {', '.join(unknown[:10])}"
                         f"{' ...' if len(unknown) > 10 else ''}; use the same class folders in both splits")
    mapping = torch.tensor([position[name] for name in class_names], dtype=torch.long)
    return mapping[labels]


@dataclass
class LabelledSplits:
    """Train and val features with their labels as indices into the training classes."""

    train: FeatureStore
    val: FeatureStore
    train_labels: Tensor
    val_labels: Tensor

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def open_labelled_splits(
    data: str | None, train: str | None, val: str | None, *, output_dir: str | Path, backbone: FeatureBackbone,
    extract: ExtractConfig, protocol: str,
) -> LabelledSplits:
    """The features of ``data`` (an ImageNet-style root) or of explicit ``train``/``val`` sources, read or extracted
    (:func:`~eupe.extract.open_splits`), with the val labels re-indexed into the training classes.

    ``protocol`` names the evaluation in the error raised when the training set has fewer than two classes.
    """
    train_src, val_src = resolve_splits(data, train, val)
    train_store, val_store = open_splits(train_src, val_src, output_dir=output_dir, backbone=backbone, config=extract)
    classes = train_store.class_names
    if len(classes) < 2:  # one class makes every prediction right: a 100% that measures nothing
        held = f"only the class {classes[0]!r}" if classes else "no classes"
        raise ValueError(f"The training set {train_src} has {held}: {protocol} needs labelled training images of at "
                         "least two classes (one subfolder per class)")
    train_labels = align_labels(train_store.labels, classes, classes, f"training set {train_src}")
    val_labels = align_labels(val_store.labels, val_store.class_names, classes, f"validation set {val_src}")
    return LabelledSplits(train_store, val_store, train_labels, val_labels)
