"""Uncertainty of an evaluation metric: a percentile-bootstrap confidence interval over its questions or queries
(used by the demos' k-NN tables and the VLM benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class ConfidenceInterval:
    """A metric on the full set of questions (``estimate``) and its bootstrap interval [``low``, ``high``]."""

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; the statistic of accuracy-type metrics for :func:`bootstrap_ci`."""
    values = list(values)
    return sum(values) / len(values)


def bootstrap_ci(items: Sequence[T], statistic: Callable[[Sequence[T]], float] = mean, *, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> ConfidenceInterval:
    """Percentile-bootstrap interval of ``statistic`` over questions: ``resamples`` times, draw ``len(items)``
    questions with replacement and recompute the metric; the interval spans the central ``confidence`` share.

    ``items`` are per-question values: scores for accuracies (``statistic=mean``, the default, e.g. the
    :func:`vqa_accuracy` of each question), or ``(prediction, label)`` pairs for a metric that is not a mean, e.g.
    ``lambda pairs: pope_scores(*zip(*pairs)).f1``. The same ``seed`` gives the same interval.
    """
    if not items:
        raise ValueError("bootstrap_ci needs at least one item")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(items), size=(resamples, len(items)))
    values = np.array([statistic([items[i] for i in row]) for row in draws], dtype=np.float64)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return ConfidenceInterval(estimate=float(statistic(items)), low=float(low), high=float(high),
                              confidence=confidence, resamples=resamples)
