from __future__ import annotations

import math

import pytest
import torch

from eupe.benchmark import gflops_per_image, peak_memory_mib
from tests.helpers import tiny_vit


def _vit_flops(size: int, dim: int, depth: int, prefix: int, mlp_ratio: int = 4, patch: int = 16) -> float:
    """Analytic forward FLOPs of the ViT: matmuls (2 per multiply-add), attention and the patch convolution."""
    n_patches = (size // patch) ** 2
    n = n_patches + prefix
    per_block = 2 * n * (3 * dim * dim + dim * dim + 2 * dim * mlp_ratio * dim) + 2 * 2 * n * n * dim
    return depth * per_block + 2 * n_patches * dim * 3 * patch * patch


def test_vit_gflops_match_the_analytic_count():
    model = tiny_vit().eval()
    expected = _vit_flops(64, dim=64, depth=2, prefix=5) / 1e9
    assert gflops_per_image(model, 64) == pytest.approx(expected, rel=1e-6)
    assert gflops_per_image(model, 64, batch=3) == pytest.approx(expected, rel=1e-6)


def test_peak_memory_sees_a_large_allocation():
    def allocate(x: torch.Tensor) -> float:
        y = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched so it is resident
        return float(y.sum())

    mib = peak_memory_mib(allocate, torch.zeros(1))
    assert math.isnan(mib) or 48 <= mib <= 200


def test_flops_are_per_image_for_convnext():
    from eupe.models import ConvNeXt

    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    one, two = gflops_per_image(model, 64), gflops_per_image(model, 128)
    assert one > 0 and two == pytest.approx(4 * one, rel=0.02)  # convolutions scale with the pixel count
