"""The one LR schedule: warm-up endpoints, the cosine's middle and end, and the batch-size scaling rules."""

import math

import pytest
import torch

from eupe.utils.schedule import scaled_lr, set_lr, warmup_cosine


def test_warmup_then_cosine_hits_its_endpoints():
    # warm-up 4 steps from 0 to 1.0, then cosine over the remaining 10 steps down to 0.1
    assert [warmup_cosine(s, 14, 1.0, 4, end=0.1) for s in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert warmup_cosine(9, 14, 1.0, 4, end=0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos(pi/2) = 0
    assert warmup_cosine(14, 14, 1.0, 4, end=0.1) == pytest.approx(0.1)
    assert warmup_cosine(99, 14, 1.0, 4, end=0.1) == pytest.approx(0.1)  # past the end it stays at the floor
    assert warmup_cosine(0, 5, 2.0, 0) == pytest.approx(2.0)  # no warm-up: starts at the peak
    with pytest.raises(ValueError, match="positive"):
        warmup_cosine(0, 0, 1.0, 0)


def test_lr_scaling_rules_and_set_lr():
    assert scaled_lr(1e-3, 512, "linear_wrt_256") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 4096, "sqrt_wrt_1024") == pytest.approx(1e-3 * 4 * math.sqrt(4))
    with pytest.raises(ValueError, match="sqrt_wrt_1024"):
        scaled_lr(1e-3, 8, "cubic")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    set_lr(opt, 0.5, beta1=0.8)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.8, 0.999)
