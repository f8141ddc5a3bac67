from __future__ import annotations

import pytest
import torch

from eupe.layers import SelfAttentionBlock


@pytest.mark.parametrize("ffn_layer", ["mlp", "swiglu"])
@pytest.mark.parametrize("layerscale_init", [0.5, None])
def test_inference_path_matches_autograd_path_and_keeps_its_input(ffn_layer, layerscale_init):
    """Without autograd the block writes GELU and the residual sum into its own fresh buffers; the numbers must
    equal the autograd path's, and the caller's tensor (e.g. a collected intermediate output) must not change."""
    torch.manual_seed(0)
    block = SelfAttentionBlock(32, 4, ffn_layer=ffn_layer, mask_k_bias=True, layerscale_init=layerscale_init).eval()
    x = torch.randn(2, 7, 32)
    expected = block(x)
    assert expected.requires_grad
    kept = x.clone()
    with torch.inference_mode():
        got = block(x)
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-6)
    assert torch.equal(x, kept)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected.detach(), atol=1e-6, rtol=1e-6)
    assert torch.equal(x, kept)
