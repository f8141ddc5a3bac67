"""forward_intermediates / feature_info: timm's multi-layer interface, consistent with get_intermediate_layers."""

from __future__ import annotations

import pytest
import torch

from eupe.models import ConvNeXt
from tests.helpers import tiny_vit


@torch.inference_mode()
def test_vit_maps_match_get_intermediate_layers_and_final_matches_forward_features():
    model = tiny_vit(depth=4).eval()
    x = torch.randn(2, 3, 48, 64)
    final, maps = model.forward_intermediates(x, indices=[-1, 1], norm=True)
    expected = model.get_intermediate_layers(x, n=[1, 3], reshape=True, norm=True)
    assert len(maps) == 2
    for got, want in zip(maps, expected):
        assert got.shape == (2, 64, 3, 4)
        torch.testing.assert_close(got, want)
    features = model.forward_features(x)
    p = model.num_prefix_tokens
    torch.testing.assert_close(final[:, 0], features["x_norm_clstoken"])
    torch.testing.assert_close(final[:, p:], features["x_norm_patchtokens"])
    assert [info["reduction"] for info in model.feature_info] == [16] * 4
    assert [info["module"] for info in model.feature_info] == [f"blocks.{i}" for i in range(4)]


@torch.inference_mode()
def test_convnext_stage_maps_have_the_strides_and_widths_of_feature_info():
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    x = torch.randn(2, 3, 64, 96)
    maps = model.forward_intermediates(x, intermediates_only=True)
    for got, info in zip(maps, model.feature_info, strict=True):
        assert got.shape == (2, info["num_chs"], 64 // info["reduction"], 96 // info["reduction"])
    normed = model.forward_intermediates(x, indices=2, norm=True, intermediates_only=True)
    for got, want in zip(normed, model.get_intermediate_layers(x, n=2, reshape=True, norm=True), strict=True):
        torch.testing.assert_close(got, want)
    final, _ = model.forward_intermediates(x, indices=[0])
    torch.testing.assert_close(final, maps[-1])


@torch.inference_mode()
def test_nlc_format_and_index_errors():
    model = tiny_vit(depth=3).eval()
    x = torch.randn(1, 3, 32, 32)
    (tokens,) = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
    assert tokens.shape == (1, 4, 64)
    with pytest.raises(ValueError, match="model has 3"):
        model.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match="model has 3"):
        model.forward_intermediates(x, indices=[-4])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
