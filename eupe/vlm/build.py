"""Assemble an untrained LLaVA-1.5-style VLM (EUPE tower -> MLP projector -> any causal LM) as a transformers folder.

The folder is a standard ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` checkpoint: after
``import eupe.vlm`` (which registers the tower and its image processor with the Auto classes),
``AutoModelForImageTextToText.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)`` load it, and
LLaVA's own training and generation code runs on it. The projector is freshly initialised: the folder is the
starting point of LLaVA's stage 1 (projector pre-training), not a trained VLM.

Token handling follows transformers' LLaVA conversion script (``convert_llava_weights_to_hf.py``): ``<image>`` is
added as a special token, ``<pad>`` when the tokenizer has no pad token, the embedding matrix grows (when the new
tokens do not fit in it) to a multiple of 64 rows, and every new row is drawn from ``N(mean, 1e-5 * covariance)``
of the existing rows (the mean itself when that covariance is singular, as transformers' ``resize_token_embeddings``
does). The script draws the output rows from the input embeddings' statistics; we use each matrix's own, which is
the same for tied embeddings and keeps new logits on the scale of the existing ones otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from tokenizers import AddedToken
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from ..loading.sources import hub_reachable
from .data import pixel_batches
from .processor import EupeImageProcessor
from .tower import (
    VISION_FEATURE_LAYER,
    VISION_FEATURE_SELECT_STRATEGY,
    EupeVisionConfig,
    EupeVisionModel,
    FeatureLayer,
    fit_feature_standardization,
)

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
EMBEDDING_PAD_MULTIPLE = 64  # the conversion script's "pad to 64 for performance reasons"
NEW_ROW_COVARIANCE_SCALE = 1e-5  # the conversion script's MultivariateNormal(mu, 1e-5 * sigma)


class VLMFolderError(ValueError):
    """A saved EUPE VLM folder whose parts disagree (tower, processor, tokenizer, LLaVA config)."""


class BuiltVLM(NamedTuple):
    """What :func:`build_vlm` returns: the folder and the in-memory model and processor it holds."""

    path: Path
    model: LlavaForConditionalGeneration
    processor: LlavaProcessor


def build_vlm(
    eupe_model: str,
    eupe_weights: str | os.PathLike | None,
    language_model: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    eupe_pretrained: bool = True,
    feature_layer: FeatureLayer = "last_norm",
    image_size: int = 384,
    gguf_file: str | None = None,
    chat_template: str | None = None,
    dtype: torch.dtype | str = "auto",
    seed: int = 0,
    standardize_images: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> BuiltVLM:
    """Builds and saves an EUPE + ``language_model`` LLaVA-1.5 VLM with an untrained projector into ``output_dir``.

    * ``eupe_model`` / ``eupe_weights`` / ``eupe_pretrained``: the tower, as for ``eupe.load`` (``eupe_weights=None``
      takes the released file, or random weights with ``eupe_pretrained=False``).
    * ``language_model``: a causal LM, hub id or local folder; with ``gguf_file`` (a file name inside that folder
      or repository) a GGUF checkpoint, dequantised by transformers.
    * ``feature_layer`` / ``image_size``: see :class:`~eupe.vlm.EupeVisionConfig`.
    * ``chat_template``: used as given (it must render image content items itself, e.g. as ``<image>``). By
      default the LM's own template is kept, wrapped so that multimodal messages (content lists with ``image``
      and ``text`` items) become ``<image>\\n`` + text; an LM without a template is refused.
    * ``dtype``: of the whole VLM (``"auto"``: the LM checkpoint's); the tower's RoPE periods stay fp32.
    * ``seed``: for the projector and the new embedding rows, so a build is reproducible.
    * ``standardize_images``: image files to fit the tower's feature standardisation on (off when empty; see
      :class:`~eupe.vlm.EupeVisionConfig`), e.g. the stage-(a) training images or a sample of them.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"output_dir {output_dir} exists and is not an empty folder; choose another one or "
                              f"pass overwrite=True to write the VLM files into it")
    _require_language_model(language_model, gguf_file)
    # a hub id without a network: the local cache at once, instead of the hub client's retries (half a minute)
    offline = not Path(language_model).exists() and not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(language_model, gguf_file=gguf_file, local_files_only=offline)
    except OSError as err:  # a hub id that cannot be fetched (offline, private, misspelt)
        reason = "the Hugging Face hub cannot be reached: no network?" if offline else str(err)
        raise VLMFolderError(f"language model {str(language_model)!r} is not a local folder and could not be loaded "
                             f"from the Hugging Face hub ({reason}); give a local causal-LM folder, or a hub id that "
                             "is in the local cache when offline") from None
    template = _resolve_chat_template(tokenizer.chat_template, chat_template, language_model)
    tower = EupeVisionModel.from_eupe(eupe_model, eupe_weights, pretrained=eupe_pretrained,
                                      feature_layer=feature_layer, image_size=image_size)
    lm = AutoModelForCausalLM.from_pretrained(language_model, gguf_file=gguf_file, dtype=dtype,
                                              local_files_only=offline)
    if getattr(lm.config, "quantization_config", None) is not None and gguf_file:
        # the GGUF weights are dequantised on load: saved with this, the folder would reload as a quantized
        # model, which transformers.Trainer refuses to train (`eupe vlm train`)
        del lm.config.quantization_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image_token_id = _add_special_tokens(tokenizer, lm)
        config = LlavaConfig(
            vision_config=tower.config,
            text_config=lm.config,
            image_token_index=image_token_id,
            image_seq_length=tower.config.num_image_tokens,
            projector_hidden_act="gelu",
            multimodal_projector_bias=True,
            vision_feature_layer=VISION_FEATURE_LAYER,
            vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY,
        )
        model = _assemble(config, tower, lm)

    tokenizer.chat_template = template
    processor = LlavaProcessor(
        image_processor=EupeImageProcessor.for_tower(tower.config),
        tokenizer=tokenizer,
        patch_size=tower.config.patch_size,
        vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY,
        num_additional_image_tokens=0,
        image_token=IMAGE_TOKEN,
        chat_template=template,
    )
    if standardize_images:
        standardize_tower(model.model.vision_tower, processor.image_processor, standardize_images)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    check_vlm_folder(output_dir)
    return BuiltVLM(output_dir, model.eval(), processor)


def standardize_tower(tower: EupeVisionModel, image_processor: EupeImageProcessor,
                      images: Sequence[str | os.PathLike], batch_size: int = 32) -> None:
    """Fits ``tower``'s feature standardisation on the image files ``images``, preprocessed by ``image_processor``
    as in training (an undecodable file is an :class:`~eupe.data.images.ImageDecodeError` naming it)."""
    fit_feature_standardization(tower, pixel_batches(image_processor, images, batch_size))


def _require_language_model(language_model: str | os.PathLike, gguf_file: str | None) -> None:
    """Refuses, before anything is loaded, a ``language_model`` that is a path but no causal-LM folder: missing,
    a file, a folder without ``config.json`` (or without ``gguf_file``). A hub id (``owner/name``) that is not a
    local path is left to transformers."""
    path = Path(language_model)
    text = str(language_model)
    looks_like_path = path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if not looks_like_path:
        return
    if not path.exists():
        raise FileNotFoundError(f"language model folder {path} does not exist; give a causal-LM folder (with "
                                "config.json, or a GGUF file and --gguf-file NAME) or a hub id such as "
                                "HuggingFaceTB/SmolLM2-135M-Instruct")
    if path.is_file():
        hint = (f"--language-model {path.parent} --gguf-file {path.name}" if path.suffix == ".gguf"
                else "the folder that holds the LM's config.json")
        raise VLMFolderError(f"language model {path} is a file, not a folder; give {hint}")
    needed = path / gguf_file if gguf_file else path / "config.json"
    if not needed.is_file():
        found = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; it holds GGUF files ({', '.join(found)}): pass --gguf-file NAME" if found and not gguf_file else ""
        raise VLMFolderError(f"{path} is not a causal-LM folder: {needed.name} is missing{hint}")


def image_aware_template(template: str) -> str:
    """Wraps a text-only chat template so that it also renders multimodal messages.

    Messages whose ``content`` is a list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items (the
    format ``ProcessorMixin.apply_chat_template`` takes) are flattened to one string, each image as ``<image>``
    and a newline (LLaVA-1.5's prompt convention), before ``template`` runs; string contents pass unchanged.
    """
    lines = [
        "{%- set flat = namespace(messages=[]) -%}",
        "{%- for message in messages -%}",
        "  {%- if message['content'] is string -%}",
        "    {%- set flat.messages = flat.messages + [message] -%}",
        "  {%- else -%}",
        "    {%- set text = namespace(value='') -%}",
        "    {%- for item in message['content'] -%}",
        "      {%- if item['type'] == 'image' -%}",
        f"        {{%- set text.value = text.value + '{IMAGE_TOKEN}\\n' -%}}",
        "      {%- elif item['type'] == 'text' -%}",
        "        {%- set text.value = text.value + item['text'] -%}",
        "      {%- endif -%}",
        "    {%- endfor -%}",
        "    {%- set flat.messages = flat.messages + [dict(message, content=text.value)] -%}",
        "  {%- endif -%}",
        "{%- endfor -%}",
        "{%- set messages = flat.messages -%}",
    ]
    return "\n".join(lines) + "\n" + template


def _resolve_chat_template(lm_template: str | dict[str, str] | None, explicit: str | None,
                           language_model: str | os.PathLike) -> str | dict[str, str]:
    if explicit is not None:
        return explicit
    if lm_template is None:
        raise ValueError(
            f"The language model {os.fspath(language_model)!r} has no chat template, so the VLM would not know how "
            f"to lay out a conversation. Pass chat_template=... to build_vlm: a Jinja template over `messages` "
            f"that renders image content items as {IMAGE_TOKEN!r} (see LLaVA-1.5's 'USER: <image>\\n... "
            f"ASSISTANT:' format)."
        )
    if isinstance(lm_template, dict):
        return {name: image_aware_template(t) for name, t in lm_template.items()}
    return image_aware_template(lm_template)


def _add_special_tokens(tokenizer: Any, lm: PreTrainedModel) -> int:
    """Adds ``<image>`` (and ``<pad>`` if missing), grows the LM's embeddings as the LLaVA conversion script does,
    and returns the image token id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"The tokenizer splits {IMAGE_TOKEN!r} into {len(ids)} tokens {ids}; it must be one token")
    old_rows = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        stats = [_row_statistics(m.weight) for m in _distinct_embeddings(lm)]
        lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=EMBEDDING_PAD_MULTIPLE, mean_resizing=False)
        with torch.no_grad():
            for module, (mean, scale_tril) in zip(_distinct_embeddings(lm), stats):
                new = module.weight[old_rows:]
                noise = torch.randn(new.shape, dtype=torch.float32) @ scale_tril.T if scale_tril is not None else 0
                new.copy_((mean + noise).to(new.dtype))
    lm.config.pad_token_id = lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return ids[0]


def _distinct_embeddings(lm: PreTrainedModel) -> list[nn.Module]:
    """The input embedding and, unless tied to it, the output projection."""
    inp, out = lm.get_input_embeddings(), lm.get_output_embeddings()
    return [inp] if out is None or out.weight is inp.weight else [inp, out]


def _row_statistics(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean of the rows and the Cholesky factor of ``1e-5 *`` their covariance (``None`` if it is singular)."""
    rows = weight.detach().float()
    mean = rows.mean(0)
    centred = rows - mean
    covariance = NEW_ROW_COVARIANCE_SCALE * (centred.T @ centred) / rows.shape[0]
    scale_tril, info = torch.linalg.cholesky_ex(covariance)
    return mean, (scale_tril if info == 0 else None)


def _assemble(config: LlavaConfig, tower: EupeVisionModel, lm: PreTrainedModel) -> LlavaForConditionalGeneration:
    """A LLaVA model around the loaded tower and LM (no copy, no second random init) with a new projector."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    expected = type(model.model.language_model)
    if type(lm.base_model) is not expected:
        raise ValueError(
            f"{type(lm).__name__}'s base model is a {type(lm.base_model).__name__}, but LLaVA builds a "
            f"{expected.__name__} from its config; build_vlm supports causal LMs whose base model is what AutoModel "
            f"builds for their config (Llama, Qwen2, Mistral, SmolLM, ...)"
        )
    # The LM was loaded in its dtype by from_pretrained (which also set up its non-persistent buffers, such as
    # RoPE frequencies, in fp32); the tower and the projector follow it, except what transformers keeps in fp32.
    model.model.vision_tower = tower.to(lm.dtype)
    _restore_fp32_modules(tower)
    model.model.language_model = lm.base_model
    model.lm_head = lm.get_output_embeddings()
    projector = LlavaMultiModalProjector(config)  # torch's default init, as in LLaVA's code
    model.model.multi_modal_projector = projector.to(lm.dtype)
    model.generation_config = lm.generation_config
    model.tie_weights()
    return model


def _restore_fp32_modules(model: PreTrainedModel) -> None:
    """Puts back in fp32 what transformers keeps in fp32 on load (``_keep_in_fp32_modules_strict``: the tower's
    RoPE periods), so the built model equals the reloaded one."""
    keep = tuple(model._keep_in_fp32_modules_strict or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if any(pattern in name for pattern in keep):
            tensor.data = tensor.data.float()


def check_vlm_folder(path: str | os.PathLike) -> None:
    """Raises :class:`VLMFolderError` listing every disagreement between the parts of a saved EUPE VLM folder.

    Checked: the LLaVA config selects the tower's output as it is (``vision_feature_layer``, strategy ``"full"``,
    ``image_seq_length``); the image processor resizes to the tower's ``image_size`` with the encoder's mean/std;
    ``<image>`` expands to exactly the tower's token count; the image token id and the vocabulary fit the LM.
    """
    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    if not isinstance(config, LlavaConfig) or not isinstance(config.vision_config, EupeVisionConfig):
        raise VLMFolderError(f"{path} is not an EUPE LLaVA folder: its config is a {type(config).__name__} with "
                             f"vision config {type(getattr(config, 'vision_config', None)).__name__}")
    tower = config.vision_config
    processor = AutoProcessor.from_pretrained(path)
    image_processor = processor.image_processor
    problems = []

    select = config.vision_feature_layer
    if (select if isinstance(select, list) else [select]) != [VISION_FEATURE_LAYER]:
        problems.append(f"config.json vision_feature_layer is {select}, but the tower has a single hidden state: "
                        f"set it to {VISION_FEATURE_LAYER} (choose the layer with vision_config.feature_layer)")
    if config.vision_feature_select_strategy != VISION_FEATURE_SELECT_STRATEGY:
        problems.append(f"config.json vision_feature_select_strategy is {config.vision_feature_select_strategy!r}: "
                        f"'default' drops the first token, but the tower returns patch tokens only; set 'full'")
    if config.image_seq_length != tower.num_image_tokens:
        problems.append(f"config.json image_seq_length is {config.image_seq_length}, the tower gives "
                        f"{tower.num_image_tokens} tokens at {tower.image_size}px")

    side = tower.image_size
    for name in ("size", "crop_size"):
        size = getattr(image_processor, name, None)
        got = f"{size.height}x{size.width}" if size is not None else None
        if got != f"{side}x{side}":
            problems.append(f"preprocessor {name} is {got}, the tower expects {side}x{side} "
                            f"(vision_config.image_size)")
    if not image_processor.do_resize:
        problems.append("preprocessor do_resize is false: images of other sizes would give other token counts")
    for name, expected in (("image_mean", tower.image_mean), ("image_std", tower.image_std)):
        got = list(getattr(image_processor, name))
        if not image_processor.do_normalize or not torch.allclose(torch.tensor(got, dtype=torch.float64),
                                                                  torch.tensor(expected, dtype=torch.float64)):
            problems.append(f"preprocessor {name} is {got} (do_normalize={image_processor.do_normalize}), the "
                            f"encoder was trained with {expected}")

    expanded = processor.num_additional_image_tokens
    if processor.patch_size:
        expanded += (side // processor.patch_size) ** 2
    if processor.vision_feature_select_strategy == "default":
        expanded -= 1
    features = tower.num_image_tokens - (config.vision_feature_select_strategy == "default")
    if expanded != features:
        problems.append(
            f"the processor expands {processor.image_token!r} to {expanded} tokens (patch_size="
            f"{processor.patch_size}, num_additional_image_tokens={processor.num_additional_image_tokens}, "
            f"vision_feature_select_strategy={processor.vision_feature_select_strategy!r}) but the model feeds "
            f"{features} image features; set patch_size={tower.patch_size}, num_additional_image_tokens=0 and "
            f"vision_feature_select_strategy={VISION_FEATURE_SELECT_STRATEGY!r} in processor_config.json"
        )
    if processor.image_token_id != config.image_token_id:
        problems.append(f"the tokenizer's {processor.image_token!r} is id {processor.image_token_id}, config.json "
                        f"image_token_index is {config.image_token_id}")
    vocab = config.text_config.vocab_size
    if len(processor.tokenizer) > vocab:
        problems.append(f"the tokenizer has {len(processor.tokenizer)} tokens, the LM's embeddings {vocab} rows")
    if problems:
        raise VLMFolderError(f"{path} is inconsistent; rebuild it with eupe.vlm.build_vlm or fix:\n- "
                             + "\n- ".join(problems))
