"""An EUPE backbone as a transformers vision model, so LLaVA-style VLMs can use it as their vision tower.

``LlavaForConditionalGeneration`` builds its tower with ``AutoModel.from_config(config.vision_config)`` and then
takes ``tower(pixel_values, output_hidden_states=vision_feature_layer).hidden_states[vision_feature_layer]``,
dropping the first token when ``vision_feature_select_strategy == "default"`` (transformers 5.24,
``LlavaModel.get_image_features``). :class:`EupeVisionModel` computes exactly one feature map, the patch tokens of
the layer named by :attr:`EupeVisionConfig.feature_layer` (no class token, no storage tokens), and returns it as
``last_hidden_state`` and as the only entry of ``hidden_states``. A LLaVA config therefore selects it with
``vision_feature_layer=-1`` (:data:`VISION_FEATURE_LAYER`) and ``vision_feature_select_strategy="full"``
(:data:`VISION_FEATURE_SELECT_STRATEGY`); any other index is rejected with an explanation.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any, Iterable, Literal

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..loading import load
from ..models import Backbone, Projectors, create_model, get_model_entry

FeatureLayer = Literal["last_norm", "last", "penultimate"]
FEATURE_LAYERS: tuple[str, ...] = ("last_norm", "last", "penultimate")
VISION_FEATURE_LAYER = -1  # the LLaVA config value that picks the tower's single hidden state
VISION_FEATURE_SELECT_STRATEGY = "full"  # the tower returns patch tokens only: nothing to drop
BACKBONE_PREFIX = "backbone"  # state-dict prefix of the wrapped eupe backbone


class EupeVisionConfig(PretrainedConfig):
    """Configuration of :class:`EupeVisionModel`: which EUPE backbone, which of its layers, at which input size.

    * ``eupe_model``: a registered EUPE name (``eupe.list_models()``), e.g. ``"eupe_vits16"``.
    * ``arch``: the backbone's architecture arguments. Filled in from the registry when the config is created and
      saved with it, so a saved tower is rebuilt with the same shape even if the registry entry of that name
      changes later (``create_model(eupe_model, **arch)``).
    * ``feature_layer``: the patch tokens handed to the projector:

      - ``"last_norm"`` (default): the last block (ViT) or last stage (ConvNeXt) with the final LayerNorm, i.e.
        ``forward_features(x)["x_norm_patchtokens"]``;
      - ``"last"``: the same layer without the final norm;
      - ``"penultimate"``: the block before the last (ViT) or the third stage (ConvNeXt), without norm.

      Why ``"last_norm"``: LLaVA takes CLIP's penultimate, un-normalised layer because CLIP's last layer is
      shaped by its contrastive objective on the class token only. EUPE's patch tokens are themselves the
      distillation target: the normalised last-layer patch tokens are what the multi-teacher loss trained (through
      the adapter heads), what every dense evaluation of the paper reads, and what the released checkpoints
      promise. The raw layers are kept for ablations.
    * ``image_size``: the square input side the tower is used at (384 in the paper's VLM protocol: 24 x 24 = 576
      tokens for the patch-16 ViTs); it must be a multiple of the feature stride.
    * ``image_mean`` / ``image_std``: the input normalisation the encoder was trained with (ImageNet).
    * ``feature_standardization``: when true, the tokens are standardised per channel, ``(x - mean) / std``, with
      statistics of the tower's own tokens over a set of images (:func:`fit_feature_standardization`), stored in
      the folder as the buffers ``feature_mean`` / ``feature_std``. Off by default (the tokens are then exactly
      the backbone's). Why it exists: EUPE's patch tokens share a large component across images (the VLM demo
      reports its share of their energy, ``mean_token_energy_share``), so LLaVA's projector sees uncentred inputs
      and its stage (a) learns slowly. RADIO's ``FeatureNormalizer`` likewise subtracts a stored mean from its
      features and applies a stored linear map.

    ConvNeXt: the paper gives no VLM protocol for it. ``"last_norm"`` takes the normalised stride-32 last stage,
    again the distilled output, i.e. 12 x 12 = 144 tokens at 384 (the ViTs' 576 tokens need 768 px, or
    ``"penultimate"``: the raw stride-16 third stage, 384 channels, 576 tokens at 384). We do not upsample the
    stride-32 map to a 24 x 24 grid: that would quadruple the LLM's visual sequence without adding information.
    """

    model_type = "eupe_vision"
    base_config_key = "vision_config"

    eupe_model: str = "eupe_vits16"
    arch: dict | None = None
    feature_layer: str = "last_norm"
    image_size: int = 384
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    feature_standardization: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"feature_layer={self.feature_layer!r} is not one of {', '.join(FEATURE_LAYERS)}")
        entry = get_model_entry(self.eupe_model)  # a KeyError listing the known names for a typo
        if self.arch is None:
            self.arch = json.loads(json.dumps(entry.arch))  # tuples -> lists: what config.json will hold
        pretrained = entry.pretrained
        if self.image_mean is None:
            self.image_mean = list(pretrained.mean if pretrained else IMAGENET_MEAN)
        if self.image_std is None:
            self.image_std = list(pretrained.std if pretrained else IMAGENET_STD)
        super().__post_init__(**kwargs)
        if self.image_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a positive multiple of {self.patch_size}, the stride of "
                f"{self.eupe_model}'s {self.feature_layer!r} features; use e.g. "
                f"{max(self.image_size // self.patch_size, 1) * self.patch_size}"
            )

    @property
    def _layer(self) -> dict[str, int]:
        return _layer_info(self.eupe_model, json.dumps(self.arch, sort_keys=True), self.feature_layer)

    @property
    def hidden_size(self) -> int:
        """Channels of the selected features (what LLaVA's projector takes as input)."""
        return self._layer["num_chs"]

    @property
    def patch_size(self) -> int:
        """Input pixels per output token along each side: the feature stride (``LlavaProcessor.patch_size``)."""
        return self._layer["reduction"]

    @property
    def layer_index(self) -> int:
        """Index of the selected layer in the backbone's ``feature_info`` (blocks for ViT, stages for ConvNeXt)."""
        return self._layer["index"]

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image at ``image_size``."""
        return (self.image_size // self.patch_size) ** 2


@lru_cache(maxsize=64)
def _layer_info(eupe_model: str, arch_json: str, feature_layer: str) -> dict[str, int]:
    """``feature_info`` of the selected layer, read from a backbone built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        backbone = create_model(eupe_model, **json.loads(arch_json))
    info = backbone.feature_info
    index = len(info) - (2 if feature_layer == "penultimate" else 1)
    return {"num_chs": info[index]["num_chs"], "reduction": info[index]["reduction"], "index": index}


class EupeVisionModel(PreTrainedModel):
    """An EUPE backbone (``self.backbone``) whose output is the patch tokens of ``config.feature_layer``.

    ``forward(pixel_values)`` -> ``last_hidden_state`` ``[B, N, config.hidden_size]`` with
    ``N = (H // patch_size) * (W // patch_size)``; ``hidden_states`` is ``(last_hidden_state,)`` when requested.
    """

    config: EupeVisionConfig
    config_class = EupeVisionConfig
    base_model_prefix = "eupe_vision"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["VisionTransformer", "ConvNeXt"]  # RoPE tables and stage maps stay on one device
    _keep_in_fp32_modules_strict = ["rope_embed"]  # RoPE periods lose ~3 digits in bf16
    _supports_sdpa = True  # eupe attention always runs F.scaled_dot_product_attention

    def __init__(self, config: EupeVisionConfig) -> None:
        super().__init__(config)
        self.backbone = create_model(config.eupe_model, **config.arch)
        # ConvNeXt registers its final norm twice (``norm`` and ``norms.3``); safetensors refuses aliased tensors,
        # so the second name is left out of the file (loading ``norm`` fills both).
        aliases = [f"{BACKBONE_PREFIX}.{name}" for name in _aliased_names(self.backbone)]
        self._keys_to_ignore_on_save = aliases
        self._keys_to_ignore_on_load_missing = [re.escape(name) for name in aliases]
        if config.feature_standardization:
            self.register_buffer("feature_mean", torch.zeros(config.hidden_size))
            self.register_buffer("feature_std", torch.ones(config.hidden_size))
        self.post_init()

    @classmethod
    def from_eupe(
        cls,
        name: str,
        weights: str | os.PathLike | None = None,
        *,
        pretrained: bool = True,
        feature_layer: FeatureLayer = "last_norm",
        image_size: int = 384,
    ) -> EupeVisionModel:
        """Wraps ``eupe.load(name, weights, pretrained=pretrained)``: any EUPE checkpoint (path, URL, ``hf://``),
        the released one (``weights=None``), or random weights (``weights=None, pretrained=False``)."""
        config = EupeVisionConfig(eupe_model=name, feature_layer=feature_layer, image_size=image_size)
        backbone = load(name, weights, pretrained=pretrained)
        backbone.projectors = Projectors()  # the distillation heads play no part in a VLM; the folder omits them
        with torch.device("meta"):  # the random backbone built here is replaced by the loaded one
            model = cls(config)
        model.backbone = backbone
        return model.eval()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """eupe's own initialisation (transformers calls this for weights a checkpoint did not provide)."""
        if isinstance(module, Backbone):
            module.init_weights()

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool | int | list[int] | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[Tensor, ...]:
        """Patch tokens of ``pixel_values`` (``[B, 3, H, W]``, normalised as ``config.image_mean/std``).

        ``output_hidden_states`` is a bool, or the layer index(es) LLaVA passes (``vision_feature_layer``): the
        tower has a single hidden state, so only ``-1`` and ``0`` select it. Other keyword arguments transformers
        forwards to every tower (attention flags and the like) are accepted and have no effect.
        """
        _check_selection(output_hidden_states, self.config)
        tokens = self.patch_tokens(pixel_values)
        if self.config.feature_standardization:
            tokens = (tokens - self.feature_mean.to(tokens.dtype)) / self.feature_std.to(tokens.dtype)
        want_hidden = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden_states = (tokens,) if want_hidden is not False and want_hidden is not None else None
        if not (return_dict if return_dict is not None else self.config.return_dict):
            return (tokens,) if hidden_states is None else (tokens, hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, hidden_states=hidden_states)

    def patch_tokens(self, pixel_values: Tensor) -> Tensor:
        """The patch tokens of ``config.feature_layer``, before any feature standardisation."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        if self.config.feature_layer == "last_norm":
            return self.backbone.forward_features(pixel_values)["x_norm_patchtokens"]
        return self.backbone.forward_intermediates(pixel_values, indices=[self.config.layer_index],
                                                   output_fmt="NLC", intermediates_only=True)[0]


@torch.no_grad()
def fit_feature_standardization(tower: EupeVisionModel, pixel_batches: Iterable[Tensor]) -> EupeVisionModel:
    """Turns on ``tower.config.feature_standardization`` with the per-channel mean and standard deviation of the
    tower's unstandardised tokens over ``pixel_batches`` (``[B, 3, S, S]``, as its image processor makes them),
    accumulated in float64; returns ``tower``. A refit replaces the statistics (e.g. after re-initialising it)."""
    count, total = 0, torch.zeros(tower.config.hidden_size, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for pixels in pixel_batches:
        tokens = tower.patch_tokens(pixels).flatten(0, 1).double().cpu()
        total += tokens.sum(0)
        squares += tokens.pow(2).sum(0)
        count += tokens.shape[0]
    if count < 2:
        raise ValueError("fit_feature_standardization: the images gave fewer than 2 tokens; give more images")
    mean = total / count
    std = ((squares - count * mean.pow(2)).clamp_min(0) / (count - 1)).sqrt().clamp_min(1e-6)
    for name, value in (("feature_mean", mean), ("feature_std", std)):  # registering again replaces a buffer
        tower.register_buffer(name, value.to(device=tower.device, dtype=torch.float32))
    tower.config.feature_standardization = True
    return tower


def _aliased_names(module: torch.nn.Module) -> list[str]:
    """State-dict names of tensors already listed under an earlier name (modules registered twice)."""
    first: dict[int, str] = {}
    return [name for name, tensor in module.state_dict(keep_vars=True).items()
            if first.setdefault(id(tensor), name) != name]


def _check_selection(selection: bool | int | list[int] | None, config: EupeVisionConfig) -> None:
    """Rejects hidden-state indices other than the tower's single one, saying how to pick another layer."""
    if selection is None or isinstance(selection, bool):
        return
    indices = [selection] if isinstance(selection, int) else list(selection)
    bad = [i for i in indices if i not in (0, -1)]
    if bad:
        raise ValueError(
            f"EupeVisionModel returns one hidden state (the {config.feature_layer!r} patch tokens of "
            f"{config.eupe_model}), but hidden state(s) {bad} were requested (LLaVA's vision_feature_layer). Set "
            f"vision_feature_layer={VISION_FEATURE_LAYER} and choose the layer with EupeVisionConfig.feature_layer "
            f"(one of {', '.join(FEATURE_LAYERS)})."
        )


AutoConfig.register(EupeVisionConfig.model_type, EupeVisionConfig, exist_ok=True)
AutoModel.register(EupeVisionConfig, EupeVisionModel, exist_ok=True)
