"""Frozen patch features of a backbone, for inputs of any size.

The backbone is never trained: its last-layer patch tokens (after the backbone norm, as the paper's protocols
specify) are computed under ``inference_mode``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def feature_stride(backbone: nn.Module) -> int:
    """Pixels per token of the maps ``get_intermediate_layers(reshape=True)`` returns: the patch size where the
    model has one (ViT; a ConvNeXt built with ``patch_size`` resizes its maps to that grid), else its stride."""
    return int(getattr(backbone, "patch_size", None) or backbone.feature_stride)


def extract_patch_features(
    backbone: nn.Module, images: Tensor, autocast: contextlib.AbstractContextManager | None = None
) -> Tensor:
    """Last-layer patch tokens after the backbone norm, as a float32 ``[B, D, h, w]`` map.

    Runs under ``inference_mode`` (no graph, no saved activations); the result is copied out of inference mode so
    that a trainable head may use it as an ordinary input.
    """
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        features = backbone.get_intermediate_layers(images, n=1, reshape=True, norm=True)[0]
    return features.float().clone()


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pads ``[B, C, H, W]`` at the bottom/right to multiples of ``multiple``; returns (padded, (H, W))."""
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return (F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images), (h, w)
