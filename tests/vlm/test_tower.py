"""EupeVisionModel: the native backbone's patch tokens, LLaVA's selection of them, and the transformers round trip."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoConfig, AutoModel, LlamaConfig, LlavaConfig  # noqa: E402
from transformers.models.llava.modeling_llava import LlavaModel  # noqa: E402

import eupe  # noqa: E402
from eupe.vlm import EupeVisionConfig, EupeVisionModel  # noqa: E402
from eupe.vlm.tower import fit_feature_standardization  # noqa: E402

SIZES = {"eupe_vitt16": 64, "eupe_convnext_tiny": 64}  # 4 x 4 and 2 x 2 grids (strides 16 and 32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, str]]:
    """Per model: a native backbone with random weights and a checkpoint file of it, in the released format."""
    out = {}
    for name in SIZES:
        native = eupe.create_model(name).eval()
        path = tmp_path_factory.mktemp("ckpt") / f"{name}.pt"
        torch.save(native.state_dict(), path)
        out[name] = native, str(path)
    return out


def _native_tokens(native: torch.nn.Module, x: torch.Tensor, feature_layer: str) -> torch.Tensor:
    if feature_layer == "last_norm":
        return native.forward_features(x)["x_norm_patchtokens"]
    index = len(native.feature_info) - (2 if feature_layer == "penultimate" else 1)
    return native.get_intermediate_layers(x, n=[index], norm=False)[0]


def _tower_at_its_test_size(checkpoints, name: str) -> tuple[torch.nn.Module, int, EupeVisionModel]:
    """The native backbone, its test input size, and a tower loaded from its checkpoint at that size."""
    native, path = checkpoints[name]
    return native, SIZES[name], EupeVisionModel.from_eupe(name, path, image_size=SIZES[name])


@pytest.mark.parametrize("feature_layer", ["last_norm", "last", "penultimate"])
@pytest.mark.parametrize("name", list(SIZES))
@torch.no_grad()
def test_tokens_equal_the_native_backbone(checkpoints, name, feature_layer):
    native, path = checkpoints[name]
    size = SIZES[name]
    tower = EupeVisionModel.from_eupe(name, path, feature_layer=feature_layer, image_size=size)
    x = torch.randn(2, 3, size, size)
    out = tower(x, output_hidden_states=True)
    expected = _native_tokens(native, x, feature_layer)
    assert out.last_hidden_state.shape == (2, (size // tower.config.patch_size) ** 2, tower.config.hidden_size)
    assert torch.equal(out.last_hidden_state, expected)
    assert len(out.hidden_states) == 1 and out.hidden_states[-1] is out.last_hidden_state


@pytest.mark.parametrize("name", list(SIZES))
@torch.no_grad()
def test_save_load_round_trip_and_bf16(checkpoints, name, tmp_path):
    native, size, tower = _tower_at_its_test_size(checkpoints, name)
    tower.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    # ConvNeXt's `norms.3` is its `norm` registered twice: stored once
    assert saved.keys() == {f"backbone.{k}" for k in native.state_dict() if not k.startswith("norms.3.")}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "eupe_vision" and config["eupe_model"] == name
    assert config["arch"] == json.loads(json.dumps(eupe.models.get_model_entry(name).arch))

    x = torch.randn(2, 3, size, size)
    expected = native.forward_features(x)["x_norm_patchtokens"]
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, EupeVisionModel)
    assert torch.equal(reloaded(x).last_hidden_state, expected)

    low = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert low.dtype == torch.bfloat16
    for buffer_name, buffer in low.named_buffers():  # transformers keeps RoPE periods fp32 (ViT only)
        if buffer_name.endswith("rope_embed.periods"):
            assert buffer.dtype == torch.float32
    tokens = low(x).last_hidden_state
    assert tokens.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(tokens.float(), expected, dim=-1)
    assert cosine.min() > 0.99


@pytest.mark.parametrize("name", list(SIZES))
@torch.no_grad()
def test_feature_standardization_centres_the_fitted_tokens_and_survives_a_reload(checkpoints, name, tmp_path):
    native, size, tower = _tower_at_its_test_size(checkpoints, name)
    batches = [torch.randn(3, 3, size, size) + 0.5 for _ in range(2)]  # a shift: the raw tokens are not centred
    raw = torch.cat([native.forward_features(x)["x_norm_patchtokens"] for x in batches]).flatten(0, 1).double()

    fit_feature_standardization(tower, iter(batches))
    assert tower.config.feature_standardization
    torch.testing.assert_close(tower.feature_mean.double(), raw.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(tower.feature_std.double(), raw.std(0), rtol=1e-5, atol=1e-6)
    tokens = torch.cat([tower(x).last_hidden_state for x in batches]).flatten(0, 1)
    torch.testing.assert_close(tokens.mean(0), torch.zeros(tokens.shape[1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens.std(0), torch.ones(tokens.shape[1]), rtol=0, atol=1e-5)

    fit_feature_standardization(tower, iter(batches[:1]))  # a refit uses the raw tokens, not standardised ones
    torch.testing.assert_close(tower.feature_mean.double(), raw[:len(raw) // 2].mean(0), rtol=0, atol=1e-6)

    tower.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["feature_standardization"] is True
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(batches[0]).last_hidden_state, tower(batches[0]).last_hidden_state)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        fit_feature_standardization(tower, iter([]))
    assert tower.config.feature_standardization  # a failed fit leaves the fitted statistics in use


def test_token_counts_and_widths_at_384():
    vit = EupeVisionConfig(eupe_model="eupe_vitt16")
    assert (vit.image_size, vit.patch_size, vit.num_image_tokens, vit.hidden_size) == (384, 16, 576, 192)
    assert EupeVisionConfig(eupe_model="eupe_vitb16", feature_layer="penultimate").hidden_size == 768
    convnext = EupeVisionConfig(eupe_model="eupe_convnext_tiny")
    assert (convnext.patch_size, convnext.num_image_tokens, convnext.hidden_size) == (32, 144, 768)
    third_stage = EupeVisionConfig(eupe_model="eupe_convnext_tiny", feature_layer="penultimate")
    assert (third_stage.patch_size, third_stage.num_image_tokens, third_stage.hidden_size) == (16, 576, 384)
    tower = EupeVisionModel(vit).eval()
    with torch.no_grad():
        assert tower(torch.randn(1, 3, 384, 384)).last_hidden_state.shape == (1, 576, 192)


def test_config_pins_the_architecture():
    config = EupeVisionConfig(eupe_model="eupe_vitt16", arch={**eupe.models.get_model_entry("eupe_vitt16").arch,
                                                              "depth": 3})
    reloaded = AutoConfig.for_model(**config.to_dict())
    assert isinstance(reloaded, EupeVisionConfig) and reloaded.arch["depth"] == 3
    assert len(EupeVisionModel(reloaded).backbone.blocks) == 3


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="feature_layer='cls'.*last_norm, last, penultimate"):
        EupeVisionConfig(eupe_model="eupe_vitt16", feature_layer="cls")
    with pytest.raises(ValueError, match="image_size=200 .* multiple of 16.*use e.g. 192"):
        EupeVisionConfig(eupe_model="eupe_vitt16", image_size=200)
    with pytest.raises(KeyError, match="Unknown model 'eupe_vitx16'"):
        EupeVisionConfig(eupe_model="eupe_vitx16")


@torch.no_grad()
def test_llava_selects_exactly_the_tower_tokens():
    vision = EupeVisionConfig(eupe_model="eupe_vitt16", image_size=64)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         vision_feature_select_strategy="full")
    llava = LlavaModel(config).eval()
    x = torch.randn(2, 3, 64, 64)
    features = llava.get_image_features(pixel_values=x).pooler_output
    tokens = llava.vision_tower(x).last_hidden_state
    assert torch.equal(torch.stack(features), llava.multi_modal_projector(tokens))
    with pytest.raises(ValueError, match="vision_feature_layer=-1.*EupeVisionConfig.feature_layer"):
        llava.get_image_features(pixel_values=x, vision_feature_layer=-2)


def test_a_distilled_checkpoint_s_heads_stay_out_of_the_tower(tmp_path):
    import eupe
    from eupe.models import Projectors
    from eupe.vlm import EupeVisionModel

    student = eupe.create_model("eupe_vitt16")
    student.projectors = Projectors.build(192, 8, {"proxy": 16})
    torch.save(student.state_dict(), tmp_path / "student.pt")
    tower = EupeVisionModel.from_eupe("eupe_vitt16", tmp_path / "student.pt", image_size=32)
    assert not any(".projectors." in k for k in tower.state_dict())
    assert torch.equal(tower.backbone.cls_token, student.cls_token)
