"""RoPE against an independent implementation of the reference formula (slice, rotate_half, concatenate)."""

from __future__ import annotations

import math

import pytest
import torch

from eupe.layers import RopePositionEmbedding, apply_rope


def reference_rope(q: torch.Tensor, H: int, W: int, base: float, num_prefix: int) -> torch.Tensor:
    D = q.shape[-1]
    periods = base ** (2 * torch.arange(D // 4, dtype=torch.float32) / (D // 2))
    ch = (torch.arange(H, dtype=torch.float32) + 0.5) / H * 2 - 1
    cw = (torch.arange(W, dtype=torch.float32) + 0.5) / W * 2 - 1
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), -1).reshape(-1, 2)
    angles = (2 * math.pi * coords[:, :, None] / periods).reshape(H * W, -1).repeat(1, 2)
    sin, cos = angles.sin(), angles.cos()
    patches = q[..., num_prefix:, :]
    x1, x2 = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat([-x2, x1], -1) * sin
    return torch.cat([q[..., :num_prefix, :], rotated], dim=-2)


@pytest.mark.parametrize("H,W", [(4, 4), (3, 5)])
def test_apply_rope_matches_reference_formula(H, W):
    rope = RopePositionEmbedding(64, num_heads=2, base=100.0).eval()
    q = torch.randn(2, 2, 5 + H * W, 32)
    got = apply_rope(q, *rope.tables(H, W, 5))
    torch.testing.assert_close(got, reference_rope(q, H, W, 100.0, 5), atol=1e-5, rtol=1e-5)


def test_tables_are_cached_in_eval_and_bounded():
    rope = RopePositionEmbedding(64, num_heads=2).eval()
    assert rope.tables(4, 4, 1)[0] is rope.tables(4, 4, 1)[0]
    cached = rope.tables(4, 4, 1)[1]
    with torch.no_grad():
        rope.periods.mul_(2)  # in-place change of a normal tensor: its version counter invalidates the cache
    changed = rope.tables(4, 4, 1)[1]
    assert not torch.equal(changed, cached)
    rope.load_state_dict(RopePositionEmbedding(64, num_heads=2).state_dict())  # copy_ back to the defaults
    torch.testing.assert_close(rope.tables(4, 4, 1)[1], cached)
    with torch.inference_mode():
        inference_rope = RopePositionEmbedding(64, num_heads=2).eval()
        first = inference_rope.tables(2, 2, 1)[1]
        inference_rope.periods.mul_(2)
        assert not torch.equal(inference_rope.tables(2, 2, 1)[1], first)
    for h in range(70):
        rope.tables(h + 1, 2, 1)
    assert len(rope._cache) <= 64


def test_rope_argument_validation():
    with pytest.raises(ValueError, match="divisible"):
        RopePositionEmbedding(30, num_heads=4)
    with pytest.raises(ValueError, match="either"):
        RopePositionEmbedding(64, num_heads=2, base=None)
