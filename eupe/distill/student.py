"""The trainable side of distillation: a backbone plus its adapter heads, on [0, 1] crops.

``DistillStudent(images)`` normalises the crops with the ImageNet constants (as the released transform does),
runs the backbone once and returns, per teacher, the adapted class token ``[B, C_t]`` and the adapted patch
tokens as a ``[B, C_t, h, w]`` map, ready for :func:`eupe.distill.loss.distillation_loss`. Storage/register
tokens never enter the loss (paper section 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..models import Projectors

UNUSED_PARAMETERS = ("mask_token",)  # masked-image-modelling leftover of the reference layout


def token_grid(backbone: nn.Module, height: int, width: int, n_tokens: int) -> tuple[int, int]:
    """The patch grid of ``backbone`` for an input of ``height x width`` (ViT: patch size; ConvNeXt: stride 32)."""
    stride = backbone.feature_stride
    h, w = height // stride, width // stride
    if h * w != n_tokens:
        raise RuntimeError(
            f"The student returned {n_tokens} patch tokens for a {height}x{width} input, which is not a "
            f"{h}x{w} grid (stride {stride}); use an input size that is a multiple of {stride}"
        )
    return h, w


class DistillStudent(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_dim: int, teacher_dims: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.backbone = backbone
        for name, param in backbone.named_parameters():
            if name in UNUSED_PARAMETERS:  # never reaches the loss; frozen so DDP does not wait for its gradient
                param.requires_grad_(False)
        # The heads live in the backbone's own projectors submodule, so the backbone's state dict is the export.
        backbone.projectors = Projectors.build(backbone.embed_dim, hidden_dim, teacher_dims)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def heads(self) -> Projectors:
        """The adapter heads being trained (``backbone.projectors``)."""
        return self.backbone.projectors

    def forward(self, images: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        x = (images - self.mean) / self.std
        feats = self.backbone.forward_features(x)
        cls_tok, patches = feats["x_norm_clstoken"], feats["x_norm_patchtokens"]
        h, w = token_grid(self.backbone, x.shape[-2], x.shape[-1], patches.shape[1])
        out = {}
        for name, pair in self.heads.items():
            z_patch = pair["patch"](patches)  # token-wise: [B, N, C_t]
            out[name] = (pair["cls"](cls_tok), z_patch.transpose(1, 2).reshape(len(x), -1, h, w))
        return out
