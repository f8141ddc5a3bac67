"""The demo's k-NN table: top-1 with a bootstrap interval over the queries, and its text form."""

from __future__ import annotations

import torch

from eupe.demo.distill import format_table, knn_bank, knn_top1


def test_separable_features_score_100_with_a_degenerate_interval():
    labels = torch.arange(4).repeat_interleave(10)
    features = torch.nn.functional.one_hot(labels, 4).float() + 0.01 * torch.randn(40, 4)
    ci = knn_top1(features, labels, k=3, seed=0)
    assert (ci.estimate, ci.low, ci.high) == (100.0, 100.0, 100.0)


def test_interval_brackets_the_estimate_and_counts_the_queries():
    torch.manual_seed(0)
    labels = torch.arange(5).repeat_interleave(40)
    features = torch.randn(200, 8) + torch.nn.functional.one_hot(labels, 8).float()  # weakly separable
    ci = knn_top1(features, labels, k=10, seed=0)
    assert ci.low < ci.estimate < ci.high and int((~knn_bank(labels, 0)).sum()) == 100
    # per-query correctness is 0 or 100, so the estimate is a multiple of 1 with 100 queries
    assert ci.estimate == round(ci.estimate)


def test_table_prints_each_interval():
    text = format_table({"teacher": 44.75, "student": 24.86}, {"teacher": [40.1, 49.3], "student": [20.0, 29.9]})
    assert "teacher" in text and "[ 40.1,  49.3]" in text and "24.86" in text
