"""Monocular depth metrics (per image, then averaged over images, as BTS/AdaBins/DINOv2) and the Eigen crop."""

from __future__ import annotations

import torch
from torch import Tensor

METRIC_NAMES = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3")
# Eigen et al.'s evaluation crop of 480x640 NYU frames (rows 45:471, cols 41:601), scaled to other sizes.
EIGEN_CROP = (45, 471, 41, 601)
NYU_SIZE = (480, 640)


def eigen_mask(height: int, width: int) -> Tensor:
    """Boolean ``[H, W]`` mask of the Eigen crop, its box scaled from 480x640 to the given size."""
    y1, y2, x1, x2 = EIGEN_CROP
    sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[int(y1 * sy):int(y2 * sy), int(x1 * sx):int(x2 * sx)] = True
    return mask


def depth_metrics(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """Metrics of one image's valid pixels (1-D or any shape, all gt > 0 and pred > 0)."""
    pred, gt = pred.double().flatten(), gt.double().flatten()
    if gt.numel() == 0:
        raise ValueError("no valid ground-truth pixel to evaluate")
    ratio = torch.maximum(gt / pred, pred / gt)
    err = gt - pred
    log_err = torch.log(gt) - torch.log(pred)
    return {
        "rmse": float(err.pow(2).mean().sqrt()),
        "abs_rel": float((err.abs() / gt).mean()),
        "sq_rel": float((err.pow(2) / gt).mean()),
        "rmse_log": float(log_err.pow(2).mean().sqrt()),
        "log10": float((torch.log10(gt) - torch.log10(pred)).abs().mean()),
        "delta1": float((ratio < 1.25).double().mean()),
        "delta2": float((ratio < 1.25**2).double().mean()),
        "delta3": float((ratio < 1.25**3).double().mean()),
    }


class DepthMetricAverager:
    """Mean of per-image metrics."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self.count = 0

    def update(self, metrics: dict[str, float]) -> None:
        for name in METRIC_NAMES:
            self.sums[name] += metrics[name]
        self.count += 1

    def compute(self) -> dict[str, float]:
        if not self.count:
            raise ValueError("no image had valid ground truth; nothing to average")
        return {name: total / self.count for name, total in self.sums.items()}
