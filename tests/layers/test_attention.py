"""SelfAttention's CPU inference path (qkv bias folded into RoPE and the output projection) equals the plain one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eupe.layers import RopePositionEmbedding, SelfAttention


@pytest.mark.parametrize("mask_k_bias", [True, False])
@pytest.mark.parametrize("proj_bias", [True, False])
@pytest.mark.parametrize("with_rope", [True, False])
def test_folded_qkv_bias_matches_the_autograd_path(mask_k_bias, proj_bias, with_rope):
    torch.manual_seed(0)
    attn = SelfAttention(32, 4, mask_k_bias=mask_k_bias, proj_bias=proj_bias).eval()
    for module in attn.modules():  # biases of order 1, so a wrong fold would show
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.normal_(module.bias)
    rope = RopePositionEmbedding(32, num_heads=4).tables(3, 4, num_prefix=5) if with_rope else None
    x = torch.randn(2, 5 + 12, 32)
    expected = attn(x, rope)
    assert expected.requires_grad  # the plain path, through autograd
    with torch.inference_mode():
        got = attn(x, rope)
    torch.testing.assert_close(got, expected.detach(), atol=2e-6, rtol=1e-5)


def test_folded_path_is_not_traced():
    attn = SelfAttention(32, 4, mask_k_bias=True).eval()
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        graph = str(torch.jit.trace(attn, x).graph)
    assert "aten::mv" not in graph and "aten::matmul" not in graph  # exports keep the plain qkv bias
