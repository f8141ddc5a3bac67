"""Top-k and per-class accuracy, and label alignment between splits."""

from __future__ import annotations

import pytest
import torch

from eupe.eval.classification import align_labels, evaluate_predictions, rank_scores


def test_topk_and_per_class_against_manual_counts():
    ranked = torch.tensor([[0, 1, 2], [2, 0, -1], [1, 2, 0], [1, -1, -1], [2, 1, 0]])
    labels = torch.tensor([0, 0, 2, 0, 1])
    res = evaluate_predictions(ranked, labels, ["a", "b", "c", "d"], ks=(1, 2, 5))
    assert res.topk[1] == pytest.approx(100 * 1 / 5)  # only row 0
    assert res.topk[2] == pytest.approx(100 * 4 / 5)  # rows 0, 1, 2, 4 (row 3: -1 never counts)
    assert res.topk[5] == pytest.approx(100 * 4 / 5)
    rows = {r["class_name"]: r for r in res.per_class}
    assert rows["a"]["n"] == 3 and rows["a"]["top1"] == pytest.approx(100 / 3)
    assert rows["a"]["top2"] == pytest.approx(200 / 3)
    assert rows["c"]["top1"] == 0.0 and rows["c"]["top2"] == 100.0
    assert rows["d"]["n"] == 0 and rows["d"]["top1"] is None  # undefined, and never NaN in results
    summary = res.summary()
    assert summary["mean_per_class_top1"] == pytest.approx((100 / 3 + 0 + 0) / 3) and summary["num_samples"] == 5
    assert res.headline() == "top1 20.00 top5 80.00"
    assert evaluate_predictions(ranked, labels, ["a", "b", "c", "d"], ks=(1,)).headline() == "top1 20.00"


def test_rank_scores_caps_k():
    assert rank_scores(torch.tensor([[0.1, 0.9, 0.5]]), 5).tolist() == [[1, 2, 0]]


def test_align_labels_by_name():
    labels = torch.tensor([0, 1, 1])
    assert align_labels(labels, ["dog", "eel"], ["cat", "dog", "eel"], "val").tolist() == [1, 2, 2]
    with pytest.raises(ValueError, match="lacks: fox"):
        align_labels(labels, ["dog", "fox"], ["cat", "dog"], "val")
    with pytest.raises(ValueError, match="1 unlabelled"):
        align_labels(torch.tensor([0, -1]), ["a"], ["a"], "val")
