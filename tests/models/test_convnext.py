"""ConvNeXt behaviour beyond the reference cases."""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from eupe.models import ConvNeXt


def tiny_convnext(**kw) -> ConvNeXt:
    return ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), **kw).eval()


@torch.inference_mode()
def test_pseudo_class_token_is_normalised_pool():
    model = tiny_convnext()
    x = torch.randn(2, 3, 96, 64)
    out = model.forward_features(x)
    assert out["x_norm_patchtokens"].shape == (2, 3 * 2, 64)
    assert out["x_storage_tokens"].shape == (2, 0, 64)
    pooled = out["x_prenorm"].mean(1)
    torch.testing.assert_close(out["x_norm_clstoken"], model.norm(pooled))


@torch.inference_mode()
def test_intermediate_maps_resized_to_vit_grid():
    model = tiny_convnext(patch_size=16)
    maps = model.get_intermediate_layers(torch.randn(1, 3, 64, 96), n=4, reshape=True)
    assert [m.shape[-2:] for m in maps] == [(4, 6)] * 4
    assert [m.shape[1] for m in maps] == [8, 16, 32, 64]


@torch.inference_mode()
def test_extra_tokens_are_empty():
    model = tiny_convnext()
    ((patches, cls, extra),) = model.get_intermediate_layers(
        torch.randn(2, 3, 64, 64), n=1, return_class_token=True, return_extra_tokens=True
    )
    assert patches.shape == (2, 4, 64) and cls.shape == (2, 64) and extra.shape == (2, 0, 64)
