from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from eupe.export import ExportError, export_ready
from eupe.export.prepare import check_size, fold_layerscale, input_stride, verification_sizes
from eupe.layers import LayerScale, LinearKMaskedBias
from eupe.models import ConvNeXt, create_model
from eupe.models.int8 import fold_masked_bias
from tests.helpers import tiny_vit


def test_export_ready_matches_eager_and_leaves_model_untouched(vit):
    x = torch.randn(2, 3, 48, 80)
    wrapper = export_ready(vit, storage_tokens=True)
    assert any(isinstance(m, LinearKMaskedBias) for m in vit.modules())
    assert not any(isinstance(m, LinearKMaskedBias) for m in wrapper.modules())
    with torch.no_grad():
        cls, patches, storage = wrapper(x)
        ref = vit.forward_features(x)
    torch.testing.assert_close(cls, ref["x_norm_clstoken"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches, ref["x_norm_patchtokens"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(storage, ref["x_storage_tokens"], atol=1e-5, rtol=1e-5)
    assert patches.shape == (2, 3 * 5, 64) and wrapper.output_names[-1] == "storage_tokens"


def test_folded_bias_is_zero_on_keys():
    layer = LinearKMaskedBias(8, 24)
    with torch.no_grad():
        layer.bias.normal_()
    container = nn.Sequential(layer)
    fold_masked_bias(container)
    plain = container[0]
    assert type(plain) is nn.Linear
    assert torch.all(plain.bias[8:16] == 0) and torch.equal(plain.bias[:8], layer.bias[:8])
    x = torch.randn(3, 8)
    torch.testing.assert_close(plain(x), layer(x))


def test_export_ready_traces_rope_from_the_input_size(vit):
    """A cached RoPE table would freeze the traced size; the export copy recomputes it per input."""
    wrapper = export_ready(vit)
    vit(torch.randn(1, 3, 64, 64))  # fills the eager model's cache at 4x4
    traced = torch.jit.trace(wrapper, torch.randn(1, 3, 64, 64), check_trace=False)
    x = torch.randn(1, 3, 32, 96)
    with torch.no_grad():
        torch.testing.assert_close(traced(x)[1], vit.forward_features(x)["x_norm_patchtokens"], atol=1e-5, rtol=0)


def test_size_rules():
    convnext = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    assert input_stride(convnext) == 32
    check_size(convnext, 64, 96)
    with pytest.raises(ExportError, match="multiple of 32"):
        check_size(convnext, 64, 80)
    with pytest.raises(ExportError, match="multiple of 16"):
        check_size(tiny_vit(), 250, 256)
    sizes = verification_sizes((64, 64), 16)
    assert len(sizes) == 3 and any(h != w for h, w in sizes) and all(h % 16 == 0 and w % 16 == 0 for h, w in sizes)


def test_rejects_other_modules_and_missing_storage_tokens():
    with pytest.raises(ExportError, match="only eupe VisionTransformer and ConvNeXt"):
        export_ready(nn.Linear(2, 2))
    with pytest.raises(ExportError, match="no storage tokens"):
        export_ready(ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), storage_tokens=True)


def _random_gammas(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("model", [
    pytest.param(lambda: tiny_vit(), id="vit-mlp"),
    pytest.param(lambda: tiny_vit(ffn_layer="swiglu"), id="vit-swiglu"),
    pytest.param(lambda: create_model("eupe_convnext_tiny", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                 id="convnext"),
])
def test_layerscale_folds_into_the_preceding_linear(model):
    original = _random_gammas(model())
    folded = fold_layerscale(copy.deepcopy(original))
    assert not any(isinstance(m, LayerScale) for m in folded.modules())
    assert all(getattr(m, "gamma", None) is None for m in folded.modules())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = original.forward_features(x), folded.forward_features(x)
    torch.testing.assert_close(got["x_norm_clstoken"], expected["x_norm_clstoken"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["x_norm_patchtokens"], expected["x_norm_patchtokens"], atol=1e-5, rtol=1e-5)
