"""Frozen patch features: last layer after the norm, copied out of inference mode, any backbone stride."""

from __future__ import annotations

import torch

from eupe.eval.dense.features import extract_patch_features, feature_stride, pad_to_multiple
from eupe.models import ConvNeXt
from tests.helpers import tiny_vit


def test_extract_patch_features_is_last_layer_after_norm():
    model = tiny_vit().eval().requires_grad_(False)  # frozen, as the protocols use it
    x = torch.randn(2, 3, 48, 32)
    feats = extract_patch_features(model, x)
    assert feats.shape == (2, 64, 3, 2) and not feats.is_inference() and feats.dtype == torch.float32
    tokens = model.forward_features(x)["x_norm_patchtokens"]
    torch.testing.assert_close(feats.flatten(2).transpose(1, 2), tokens)


def test_convnext_features_have_stride_32():
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    assert extract_patch_features(model, torch.randn(1, 3, 64, 96)).shape == (1, 64, 2, 3)
    assert feature_stride(model) == 32 and feature_stride(tiny_vit()) == 16


def test_pad_to_multiple_pads_bottom_right_only_when_needed():
    x = torch.ones(1, 3, 40, 48)
    padded, size = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (48, 48) and size == (40, 48)
    assert padded[..., :40, :].eq(1).all() and padded[..., 40:, :].eq(0).all()
    assert pad_to_multiple(padded, 16)[0] is padded
