from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from eupe.export import ExportError, export_model, load_for_export
from eupe.export.hf import CONFIG_FILE, WEIGHTS_FILE, hf_config, load_hf, save_hf
from eupe.models import ConvNeXt
from tests.export.conftest import trained_like
from tests.helpers import tiny_vit

VARIANTS = {
    "eupe": dict(layerscale_init=1e-5),
    "swiglu_kbias_no_ls": dict(ffn_layer="swiglu", mask_k_bias=False, layerscale_init=None, norm_layer="layernorm",
                               n_storage_tokens=0),
}


def _features(model, x):
    with torch.no_grad():
        f = model.forward_features(x)
    return f["x_norm_clstoken"], f["x_norm_patchtokens"], f["x_storage_tokens"]


def test_hub_key_layout_and_config(tmp_path, vit):
    save_hf(vit, tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert cfg["model_type"] == "dinov3_vit" and cfg["architectures"] == ["DINOv3ViTModel"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (64, 2, 2)
    assert cfg["key_bias"] is False and cfg["query_bias"] and cfg["num_register_tokens"] == 4
    assert cfg["layer_norm_eps"] == 1e-5 and cfg["intermediate_size"] == 256 and cfg["rope_theta"] == 100.0
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert "layer.1.attention.q_proj.weight" in tensors and "layer.0.attention.k_proj.bias" not in tensors
    assert tensors["layer.0.attention.k_proj.weight"].shape == (64, 64)
    assert tensors["embeddings.register_tokens"].shape == (1, 4, 64)
    torch.testing.assert_close(tensors["layer.0.layer_scale1.lambda1"], vit.blocks[0].ls1.gamma.detach())
    qkv = vit.blocks[1].attn.qkv
    torch.testing.assert_close(tensors["layer.1.attention.v_proj.bias"], qkv.bias.detach()[128:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_through_hf_folder(tmp_path, variant):
    model = trained_like(tiny_vit(**VARIANTS[variant]))
    save_hf(model, tmp_path)
    back = load_hf(tmp_path)
    x = torch.randn(2, 3, 48, 64)
    for a, b in zip(_features(model, x), _features(back, x)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_transformers_five_prefixed_keys_load(tmp_path, vit):
    save_hf(vit, tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    save_file({("model." + k if k.startswith("layer.") else k): v for k, v in tensors.items()},
              str(tmp_path / WEIGHTS_FILE))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_features(load_hf(tmp_path), x)[0], _features(vit, x)[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_transformers_dinov3(tmp_path, variant):
    pytest.importorskip("transformers", reason="transformers is optional (pip install 'eupe[transformers]')")
    model = trained_like(tiny_vit(**VARIANTS[variant]))
    result = export_model(model, "hf", tmp_path / "hf", size=(32, 48))
    assert len(result.report.checks) == 3 and result.report.passed, str(result.report)


def test_reverse_conversion_through_load_for_export(tmp_path):
    import eupe

    model = trained_like(eupe.create_model("eupe_vitt16", depth=1))
    save_hf(model, tmp_path)
    back = load_for_export("eupe_vitt16", tmp_path, depth=1)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(back(x), model(x))
    with pytest.raises(ExportError, match="not eupe_vits16"):
        load_for_export("eupe_vits16", tmp_path)


def test_unsupported_models_and_folders(tmp_path):
    with pytest.raises(ExportError, match="ViTs only"):
        hf_config(ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path)
    save_hf(tiny_vit(), tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps(dict(cfg, model_type="dinov2")))
    with pytest.raises(ExportError, match="only 'dinov3_vit'"):
        load_hf(tmp_path)


def test_image_processor_reloads_with_transformers_and_matches_the_model_card_transform(tmp_path, vit):
    transformers = pytest.importorskip("transformers")
    import numpy as np
    from PIL import Image

    import eupe

    save_hf(vit, tmp_path, image_size=64)
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    model = transformers.AutoModel.from_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels[0], eupe.make_transform(64)(image), atol=1e-5, rtol=0)
    assert model(pixel_values=pixels).last_hidden_state.shape == (1, 1 + 4 + 16, 64)
