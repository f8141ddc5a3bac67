"""Head predictions at the input's resolution: one forward pass, sliding windows, and resizing to a target."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import extract_patch_features, feature_stride, pad_to_multiple


def dense_predict(
    backbone: nn.Module,
    head: nn.Module,
    images: Tensor,
    autocast: contextlib.AbstractContextManager | None = None,
) -> Tensor:
    """Head outputs (logits, or a depth map) upsampled bilinearly to the input size, for inputs of any size.

    The input is zero-padded to a multiple of the backbone stride so every pixel is covered by a token, and the
    upsampled output is cropped back to the input's size.
    """
    padded, (h, w) = pad_to_multiple(images, feature_stride(backbone))
    logits = head(extract_patch_features(backbone, padded, autocast))
    logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    return logits[..., :h, :w]


def sliding_window(predict: Callable[[Tensor], Tensor], image: Tensor, crop: int, stride: int, channels: int) -> Tensor:
    """Averages ``predict`` over overlapping ``crop`` x ``crop`` windows placed every ``stride`` pixels.

    ``predict`` maps a ``[B, C, h, w]`` window to ``[B, channels, h, w]``. Windows at the border are shifted inside
    the image (never padded); a side shorter than ``crop`` is covered by one window of that side's length.
    """
    if stride <= 0 or crop <= 0:
        raise ValueError(f"sliding window needs positive crop and stride, got crop={crop} stride={stride}")
    b, _, h, w = image.shape
    out = image.new_zeros((b, channels, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out[:, :, y1:y2, x1:x2] += predict(image[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def resize_like(prediction: Tensor, target: Tensor) -> Tensor:
    """``prediction`` ``[B, C, h, w]`` resized bilinearly to the spatial size of ``target``."""
    return F.interpolate(prediction, size=target.shape[-2:], mode="bilinear", align_corners=False)
