"""ViT behaviour beyond the reference cases: sizes, caching, masks, precision, training features."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from eupe.models import VisionTransformer
from tests.helpers import load_reference, tiny_vit


@pytest.fixture(scope="module")
def reference_vit():
    data = load_reference("vit_small_config.pt")
    model = VisionTransformer(**data["architecture"]).eval()
    model.load_state_dict(data["state_dict"])
    return model


@pytest.mark.parametrize("size,grid", [((224, 224), (14, 14)), ((256, 256), (16, 16)), ((256, 192), (16, 12)),
                                       ((230, 250), (14, 15))])
@torch.inference_mode()
def test_output_shapes(reference_vit, size, grid):
    x = torch.randn(2, 3, *size)
    out = reference_vit.forward_features(x)
    n = grid[0] * grid[1]
    assert out["x_norm_clstoken"].shape == (2, 64)
    assert out["x_storage_tokens"].shape == (2, 4, 64)
    assert out["x_norm_patchtokens"].shape == (2, n, 64)
    assert out["x_prenorm"].shape == (2, 1 + 4 + n, 64)
    maps = reference_vit.get_intermediate_layers(x, n=2, reshape=True)
    assert [m.shape for m in maps] == [(2, 64, *grid)] * 2


@torch.inference_mode()
def test_non_multiple_of_16_equals_cropped_input(reference_vit):
    x = torch.randn(1, 3, 230, 250)
    full = reference_vit.forward_features(x)["x_norm_patchtokens"]
    cropped = reference_vit.forward_features(x[:, :, :224, :240])["x_norm_patchtokens"]
    torch.testing.assert_close(full, cropped)


@torch.inference_mode()
def test_intermediate_layers_match_full_run_and_options(reference_vit):
    x = torch.randn(2, 3, 64, 96)
    last = reference_vit.get_intermediate_layers(x, n=1, norm=True)[0]
    torch.testing.assert_close(last, reference_vit.forward_features(x)["x_norm_patchtokens"])
    early = reference_vit.get_intermediate_layers(x, n=[0], return_class_token=True, return_extra_tokens=True)
    patches, cls, extra = early[0]
    assert patches.shape == (2, 24, 64) and cls.shape == (2, 64) and extra.shape == (2, 4, 64)
    raw = reference_vit.get_intermediate_layers(x, n=[0], norm=False)[0]
    assert not torch.allclose(raw, patches)
    with pytest.raises(ValueError, match="valid indices"):
        reference_vit.get_intermediate_layers(x, n=[3])


def test_rope_cache_follows_weights():
    model = tiny_vit(layerscale_init=1.0).eval()  # large residual branches: RoPE visibly matters
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
        model.rope_embed.periods.mul_(2)  # in-place change, as load_state_dict does
        after = model(x)
    assert not torch.allclose(before, after)
    fresh = tiny_vit(layerscale_init=1.0).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), after)


@torch.inference_mode()
def test_masks_replace_patches_with_mask_token():
    model = tiny_vit().eval()
    torch.nn.init.normal_(model.mask_token)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, 1] = True
    tokens, _ = model.prepare_tokens(x, masks)
    torch.testing.assert_close(tokens[0, 5 + 1], model.mask_token[0])
    out = model.forward_features(x, masks=masks)
    assert out["masks"] is masks


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    model = tiny_vit().eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        ref = model.forward_features(x)["x_norm_patchtokens"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_features(x)["x_norm_patchtokens"]
    cos = torch.nn.functional.cosine_similarity(ref, low.float(), dim=-1)
    assert cos.min() > 0.99


def test_model_moves_to_bfloat16():
    model = tiny_vit().eval().to(torch.bfloat16)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_every_parameter_receives_a_gradient():
    """DDP requires it: mask_token is kept in the graph even without masks."""
    model = tiny_vit().train()
    model(torch.randn(1, 3, 32, 32), is_training=True)["x_norm_clstoken"].sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_drop_path_is_stochastic_in_training_only():
    model = tiny_vit(drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_training_mode_rescales_rope_coordinates():
    model = tiny_vit()
    model.train()
    sin_a, _ = model.rope_embed.tables(2, 2, 5)
    sin_b, _ = model.rope_embed.tables(2, 2, 5)
    assert not torch.allclose(sin_a, sin_b)


def test_torch_compile_matches_eager():
    model = tiny_vit(depth=1).eval()
    x = torch.randn(1, 3, 32, 48)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), model(x))


def test_tables_cached_under_inference_mode_serve_training_too():
    model = tiny_vit().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        model(x)
    model(x).sum().backward()  # eval mode (cached tables) with autograd
    assert model.patch_embed.proj.weight.grad is not None
