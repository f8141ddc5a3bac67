from __future__ import annotations

import math
import os

import pytest
import torch

import eupe.benchmark.measure as peak_memory_module
from eupe.benchmark import gflops_per_image, peak_memory
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

    peak = peak_memory(allocate, torch.zeros(1))
    assert (math.isnan(peak.mib) and peak.reason) or 48 <= peak.mib <= 200


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or peak_memory_module._malloc_trim() is None,
                    reason="samples /proc and trims glibc's heap")
def test_peak_memory_sees_memory_the_process_freed_but_kept():
    chunk = b"\x01" * 4000  # heap-sized pieces (not mmap-ed): freed, their pages stay with the process
    held = [chunk + bytes([i % 256]) for i in range(16384)]  # 64 MiB
    pinned = [chunk + bytes([i]) for i in range(8)]  # above them on the heap: free() cannot shrink the heap
    del held

    def allocate(x: torch.Tensor) -> int:  # as a second backend reusing what the first one freed
        return len([chunk + bytes([i % 256]) for i in range(16384)])

    assert 48 <= peak_memory(allocate, torch.zeros(1)).mib <= 200
    assert pinned


def test_flops_are_per_image_for_convnext():
    from eupe.models import ConvNeXt

    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    one, two = gflops_per_image(model, 64), gflops_per_image(model, 128)
    assert one > 0 and two == pytest.approx(4 * one, rel=0.02)  # convolutions scale with the pixel count
