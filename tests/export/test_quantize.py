from __future__ import annotations

import pytest
import torch
from torch import nn

from eupe.export import quantize_int8, verify_quantized
from eupe.layers import LinearKMaskedBias


def test_quantize_int8_swaps_every_linear_and_keeps_the_original(vit):
    quantized = quantize_int8(vit)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    n_linear = sum(type(m) in (nn.Linear, LinearKMaskedBias) for m in vit.modules())
    assert sum(isinstance(m, dynamic) for m in quantized.modules()) == n_linear == 2 * 4
    assert not any(isinstance(m, dynamic) for m in vit.modules())
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        ref, out = vit.forward_features(x), quantized.forward_features(x)
    assert out["x_norm_patchtokens"].shape == ref["x_norm_patchtokens"].shape
    assert torch.nn.functional.cosine_similarity(out["x_norm_clstoken"], ref["x_norm_clstoken"]).min() > 0.99


def test_int8_quality_on_real_photos(vit):
    pytest.importorskip("skimage", reason="the quality check uses scikit-image's photos")
    report = verify_quantized(vit, quantize_int8(vit), size=64)
    assert report.passed, str(report)


def test_quantize_int8_rejects_non_fp32(vit):
    with pytest.raises(ValueError, match="fp32"):
        quantize_int8(vit.to(torch.bfloat16))
