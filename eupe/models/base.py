"""What every backbone family shares: the reference's output layouts and the forward entry points."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .adapters import Projectors

FeatureDict = dict[str, Tensor | None]


class Backbone(nn.Module):
    """Base class: subclasses implement ``_forward_features_single(x, masks) -> FeatureDict``.

    ``forward_features`` takes a batch or a list of batches (images of different sizes, as the reference
    accepts); ``forward`` returns the class token, or the full feature dict when ``is_training`` is set.
    """

    grad_checkpointing: bool = False
    feature_stride: int  # input pixels per patch token of forward_features (ViT: patch size; ConvNeXt: 32)

    def __init__(self) -> None:
        super().__init__()
        # Adapter heads into teachers' feature spaces (checkpoints' projectors.*); empty until a checkpoint or a
        # distillation run fills them. Forward passes never use them.
        self.projectors = Projectors()

    def _forward_features_single(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward to save memory during training."""
        self.grad_checkpointing = enable

    def _checkpointed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, recomputed in backward when gradient checkpointing is on and gradients are being taken."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward_features(
        self, x: Tensor | Sequence[Tensor], masks: Tensor | Sequence[Tensor | None] | None = None
    ) -> FeatureDict | list[FeatureDict]:
        """Dict with ``x_norm_clstoken``, ``x_storage_tokens``, ``x_norm_patchtokens``, ``x_prenorm``, ``masks``."""
        if isinstance(x, Tensor):
            return self._forward_features_single(x, masks)  # type: ignore[arg-type]
        masks_list = [None] * len(x) if masks is None else list(masks)  # type: ignore[arg-type]
        if len(masks_list) != len(x):
            raise ValueError(f"Got {len(x)} inputs but {len(masks_list)} masks")
        return [self._forward_features_single(xi, mi) for xi, mi in zip(x, masks_list)]

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Per layer of :meth:`forward_intermediates`: ``num_chs``, ``reduction`` (input pixels per map pixel) and
        ``module`` (timm's convention)."""
        raise NotImplementedError

    def _intermediate_maps(self, x: Tensor, layers: list[int], norm: bool,
                           final: bool) -> tuple[list[Tensor], Tensor | None]:
        raise NotImplementedError

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Feature maps of several layers for detection and segmentation necks, with timm's interface.

        ``indices``: ``None`` (every layer), ``n`` (the last ``n``) or layer indices (negative ones count from the
        end); layers are blocks (ViT, all at the patch stride) or stages (ConvNeXt, strides 4 to 32), as listed by
        :attr:`feature_info`. ``norm`` applies the output norms as ``get_intermediate_layers`` does. Returns the maps
        in layer order, ``[B, C, h, w]`` (or ``[B, h*w, C]`` with ``output_fmt="NLC"``), preceded, unless
        ``intermediates_only``, by the final output as timm gives it (ViT: all tokens after the final norm;
        ConvNeXt: the last stage's map).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        layers = take_indices(indices, len(self.feature_info))
        maps, final = self._intermediate_maps(x, layers, norm, final=not intermediates_only)
        if output_fmt == "NLC":
            maps = [m.flatten(2).transpose(1, 2) for m in maps]
        return maps if intermediates_only else (final, maps)  # type: ignore[return-value]

    def forward(self, x: Tensor | Sequence[Tensor], *, is_training: bool = False, **kwargs):
        features = self.forward_features(x, **kwargs)
        if is_training:
            return features
        if isinstance(features, list):
            return [self.head(f["x_norm_clstoken"]) for f in features]
        return self.head(features["x_norm_clstoken"])


def feature_dict(x_norm: Tensor, num_prefix: int, x_prenorm: Tensor, masks: Tensor | None) -> FeatureDict:
    """Splits normalised ``[class, storage..., patches...]`` tokens into the reference's output dict."""
    return {
        "x_norm_clstoken": x_norm[:, 0],
        "x_storage_tokens": x_norm[:, 1:num_prefix],
        "x_norm_patchtokens": x_norm[:, num_prefix:],
        "x_prenorm": x_prenorm,
        "masks": masks,
    }


def format_intermediate_outputs(
    patches: list[Tensor],
    class_tokens: list[Tensor],
    extra_tokens: list[Tensor],
    return_class_token: bool,
    return_extra_tokens: bool,
) -> tuple:
    """The reference's return layout of ``get_intermediate_layers``."""
    if return_class_token and return_extra_tokens:
        return tuple(zip(patches, class_tokens, extra_tokens))
    if return_class_token:
        return tuple(zip(patches, class_tokens))
    if return_extra_tokens:
        return tuple(zip(patches, extra_tokens))
    return tuple(patches)


def take_indices(indices: int | Sequence[int] | None, total: int) -> list[int]:
    """timm's layer selection: ``None`` = all, ``n`` = the last ``n``, or indices (negative ones count from the
    end); returned sorted and unique."""
    if indices is None:
        indices = total
    elif not isinstance(indices, int):
        indices = [int(i) + total if int(i) < 0 else int(i) for i in indices]
    return sorted(set(resolve_layer_indices(indices, total)))


def resolve_layer_indices(n: int | Sequence[int], total: int) -> list[int]:
    """``n`` as "the last n layers" (int) or explicit layer indices (sequence), validated against ``total``."""
    indices = list(range(total - n, total)) if isinstance(n, int) else [int(i) for i in n]
    if not indices or any(not 0 <= i < total for i in indices):
        raise ValueError(f"Requested layers {n!r} but the model has {total} (valid indices 0..{total - 1}).")
    return indices
