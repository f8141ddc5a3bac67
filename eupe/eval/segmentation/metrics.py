"""Semantic segmentation metrics from a confusion matrix: per-class IoU and accuracy, mIoU, pixel accuracy.

Classes that never occur in the ground truth nor in the predictions have an undefined IoU (NaN) and are left out
of the mean, as mmsegmentation's ``nanmean`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates ``matrix[true, pred]`` pixel counts over ``num_classes`` classes, skipping ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds one batch of predicted and true class maps of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}")
        keep = target != self.ignore_index
        t, p = target[keep].long().cpu(), pred[keep].long().cpu()
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"label values must lie in 0..{self.num_classes - 1} or be {self.ignore_index}")
        index = t * self.num_classes + p
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, object]:
        """``mIoU``, ``aAcc``, ``mAcc`` (in %) and per-class ``IoU``/``Acc`` lists (None for absent classes)."""
        m = self.matrix.double()
        tp = m.diag()
        gt, predicted = m.sum(1), m.sum(0)
        union = gt + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        total = m.sum()
        return {
            "mIoU": 100 * float(iou.nanmean()) if (~iou.isnan()).any() else float("nan"),
            "mAcc": 100 * float(acc.nanmean()) if (~acc.isnan()).any() else float("nan"),
            "aAcc": 100 * float(tp.sum() / total) if total > 0 else float("nan"),
            "IoU": [None if v.isnan() else 100 * float(v) for v in iou],
            "Acc": [None if v.isnan() else 100 * float(v) for v in acc],
        }
