"""The dense probes' warm-up + one-cycle LR (and beta1) schedule."""

from __future__ import annotations

import math

import pytest

from eupe.eval.dense.schedule import OptimConfig, WarmupOneCycle


def test_warmup_one_cycle_shape():
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.1, final_div_factor=100.0, momentum=[0.85, 0.95])
    s = WarmupOneCycle(cfg, total_iters=110)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(5) == pytest.approx(0.55)
    assert s.lr(10) == pytest.approx(1.0)
    assert s.lr(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    assert s.lr(110) == pytest.approx(0.01)
    assert s.beta1(0) == pytest.approx(0.95) and s.beta1(10) == pytest.approx(0.85)
    assert s.beta1(110) == pytest.approx(0.95)
    no_floor = WarmupOneCycle(OptimConfig(lr=1.0, warmup_iters=0, final_div_factor=math.inf), total_iters=4)
    assert no_floor.lr(0) == pytest.approx(1.0) and no_floor.lr(4) == pytest.approx(0.0)
    assert no_floor.beta1(3) is None
