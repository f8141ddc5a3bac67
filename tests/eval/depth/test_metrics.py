"""Depth metrics, SigLoss, bins and Eigen crop against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from eupe.eval.depth.head import DepthHead, SigLoss, bin_centres, bins_to_depth
from eupe.eval.depth.metrics import DepthMetricAverager, depth_metrics, eigen_mask


def test_depth_metrics_hand_computed():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([1.5, 2.0, 2.5])
    m = depth_metrics(pred, gt)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 2.25) / 3))
    assert m["abs_rel"] == pytest.approx((0.5 / 1 + 0 + 1.5 / 4) / 3)
    assert m["sq_rel"] == pytest.approx((0.25 / 1 + 0 + 2.25 / 4) / 3)
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(1 / 1.5) ** 2 + 0 + math.log(4 / 2.5) ** 2) / 3))
    assert m["log10"] == pytest.approx((math.log10(1.5) + 0 + math.log10(4 / 2.5)) / 3)
    # ratios max(gt/pred, pred/gt) = 1.5, 1, 1.6
    assert (m["delta1"], m["delta2"], m["delta3"]) == pytest.approx((1 / 3, 2 / 3, 1.0))


def test_averager_means_per_image_metrics():
    avg = DepthMetricAverager()
    avg.update(depth_metrics(torch.tensor([2.0]), torch.tensor([1.0])))  # rmse 1
    avg.update(depth_metrics(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 4.0])))  # rmse sqrt(9/2)
    assert avg.compute()["rmse"] == pytest.approx((1 + math.sqrt(4.5)) / 2)
    with pytest.raises(ValueError):
        DepthMetricAverager().compute()


def test_eigen_mask():
    mask = eigen_mask(480, 640)
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 601]
    assert eigen_mask(240, 320).sum() == (235 - 22) * (300 - 20)


def test_sigloss_is_scale_invariant_after_warmup():
    gt = torch.rand(2, 1, 4, 4) + 0.5
    valid = torch.ones_like(gt, dtype=torch.bool)
    loss = SigLoss(eps=0.0, warmup_iters=0)
    assert loss(gt * 2, gt, valid).item() == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-4)
    warm = SigLoss(eps=0.0, warmup_iters=1)
    noisy = gt * torch.exp(torch.randn_like(gt) * 0.3)
    g = torch.log(noisy) - torch.log(gt)
    assert warm(noisy, gt, valid).item() == pytest.approx(math.sqrt(0.15) * abs(g.mean().item()), rel=1e-4)
    assert warm(noisy, gt, valid).item() == pytest.approx(math.sqrt(g.var() + 0.15 * g.mean() ** 2), rel=1e-4)


def test_sigloss_ignores_invalid_pixels_and_handles_empty_masks():
    gt = torch.tensor([1.0, 2.0, 0.0])
    pred = torch.tensor([2.0, 4.0, 5.0])
    loss = SigLoss(eps=0.0, warmup_iters=0)
    assert loss(pred, gt, gt > 0).item() == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-4)
    assert loss(pred, gt, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_bins_to_depth():
    centres = bin_centres(0.001, 10.0, 256)
    assert centres[0] == pytest.approx(0.001) and centres[-1] == pytest.approx(10.0)
    zeros = torch.zeros(1, 256, 2, 2)
    # "linear": ReLU + eps, normalised -> uniform weights -> the mean centre
    torch.testing.assert_close(bins_to_depth(zeros, centres), torch.full((1, 1, 2, 2), float(centres.mean())))
    peaked = zeros.clone()
    peaked[:, 100] = 50.0
    assert bins_to_depth(peaked, centres, "softmax")[0, 0, 0, 0] == pytest.approx(float(centres[100]), rel=1e-4)
    log_centres = bin_centres(0.1, 10.0, 3, "log")
    torch.testing.assert_close(log_centres, torch.tensor([0.1, 1.0, 10.0]))


def test_depth_head_outputs_depth_in_range():
    head = DepthHead(8, n_bins=16, min_depth=0.5, max_depth=3.0).eval()
    depth = head(torch.randn(2, 8, 3, 4))
    assert depth.shape == (2, 1, 3, 4) and (depth >= 0.5).all() and (depth <= 3.0).all()
