import math

import pytest
import torch
import torch.nn.functional as F

from eupe.distill.loss import LossConfig, align_grids, cosine_loss, distillation_loss, patch_loss
from eupe.teachers import TeacherOutput


def test_cosine_loss_matches_definition():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    manual = sum(1 - (a[i] @ b[i]) / (a[i].norm() * b[i].norm()) for i in range(5)) / 5
    assert torch.allclose(cosine_loss(a, b), manual, atol=1e-6)
    assert cosine_loss(a, 3 * a).item() == pytest.approx(0, abs=1e-6)
    assert cosine_loss(a, -a).item() == pytest.approx(2, abs=1e-6)


def test_patch_loss_is_weighted_cosine_plus_smooth_l1_per_token():
    pred, target = torch.randn(2, 6, 3, 3), torch.randn(2, 6, 3, 3)
    cfg = LossConfig()
    p = pred.permute(0, 2, 3, 1).reshape(-1, 6)
    t = target.permute(0, 2, 3, 1).reshape(-1, 6)
    cos = (1 - F.cosine_similarity(p, t, dim=-1)).mean()
    diff = (p - t).abs()
    sl1 = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    assert torch.allclose(patch_loss(pred, target, cfg), 0.9 * cos + 0.1 * sl1, atol=1e-6)


@pytest.mark.parametrize("student_larger", [False, True])
def test_smaller_grid_is_bicubically_upsampled_to_the_larger(student_larger):
    small, large = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 4, 4)
    pred, target = (large, small) if student_larger else (small, large)
    a, b = align_grids(pred, target)
    assert a.shape == b.shape == (1, 4, 4, 4)
    up = F.interpolate(small, size=(4, 4), mode="bicubic", align_corners=False)
    assert torch.allclose(b if student_larger else a, up)
    assert torch.equal(a if student_larger else b, large)


def test_total_sums_teachers_with_weights_and_reports_terms():
    preds = {n: (torch.randn(3, 5), torch.randn(3, 5, 2, 2)) for n in ("a", "b")}
    targets = {n: TeacherOutput(torch.randn(3, 5), torch.randn(3, 5, 4, 4)) for n in ("a", "b")}
    cfg = LossConfig(teacher_weights={"b": 2.0}, patch_weights={"a": 0.5})
    total, terms = distillation_loss(preds, targets, cfg)
    assert set(terms) == {"a/cls", "a/patch", "b/cls", "b/patch"}
    expected = terms["a/cls"] + 0.5 * terms["a/patch"] + 2 * (terms["b/cls"] + terms["b/patch"])
    assert math.isclose(total.item(), expected.item(), rel_tol=1e-6)
    assert terms["a/cls"].item() == pytest.approx(cosine_loss(preds["a"][0], targets["a"].summary).item())


def test_loss_gradients_flow_to_predictions():
    pred = torch.randn(2, 4, 2, 2, requires_grad=True)
    cls = torch.randn(2, 4, requires_grad=True)
    total, _ = distillation_loss({"t": (cls, pred)}, {"t": TeacherOutput(torch.randn(2, 4), torch.randn(2, 4, 4, 4))},
                                 LossConfig())
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and cls.grad.abs().sum() > 0
