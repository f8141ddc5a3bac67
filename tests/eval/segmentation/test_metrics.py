"""mIoU against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from eupe.eval.segmentation.metrics import ConfusionMatrix


def test_miou_hand_computed():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the last pixel is ignored
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pred, target)
    out = cm.compute()
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: 1/1; class 3: absent
    assert out["IoU"][:3] == pytest.approx([50.0, 200 / 3, 100.0])
    assert out["IoU"][3] is None and out["Acc"][3] is None
    assert out["mIoU"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    assert out["aAcc"] == pytest.approx(80.0)
    assert out["Acc"][:3] == pytest.approx([50.0, 100.0, 100.0])


def test_accumulates_over_batches_and_predicted_only_classes():
    cm = ConfusionMatrix(num_classes=3)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    cm.update(torch.tensor([2]), torch.tensor([1]))
    out = cm.compute()
    # class 0: tp 1, union 2; class 1: tp 0, union 2; class 2: never true, predicted once -> IoU 0
    assert out["IoU"] == pytest.approx([50.0, 0.0, 0.0])
    assert out["Acc"][2] is None


def test_rejects_labels_outside_range_and_shape_mismatch():
    cm = ConfusionMatrix(num_classes=2)
    with pytest.raises(ValueError, match="0..1"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 3))
