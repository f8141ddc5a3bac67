"""The EUPE distillation loss (paper sections 3 and 5, following AM-RADIO).

Per teacher: ``1 - cos`` on the class token, ``alpha * (1 - cos) + beta * smooth_l1`` on the patch tokens
(alpha 0.9, beta 0.1, smooth-L1 beta 1.0), every term a mean over tokens and batch. Before the patch term the
smaller of the two grids is bicubically interpolated to the larger one; both sides are ``[B, C_teacher, h, w]``
maps at that point (after the adapter head), so this works in either direction (stage 3 can draw a larger
student or a larger teacher scale). The total is the (optionally weighted) sum over teachers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..teachers import TeacherOutput


@dataclass
class LossConfig:
    patch_cosine_weight: float = 0.9  # alpha [P]
    patch_smooth_l1_weight: float = 0.1  # beta [P]
    smooth_l1_beta: float = 1.0  # PyTorch default; the paper gives none [I]
    teacher_weights: dict[str, float] = field(default_factory=dict)  # missing teachers weigh 1 (paper: all equal)
    patch_weights: dict[str, float] = field(default_factory=dict)  # the appendix's gamma per teacher; default 1


def cosine_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over all leading dims of ``1 - cos`` along the last dim."""
    return (1 - F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)).mean()


def align_grids(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Bicubically upsamples whichever ``[B, C, h, w]`` map has fewer tokens to the other's grid."""
    if pred.shape[-2:] == target.shape[-2:]:
        return pred, target
    if pred.shape[-2] * pred.shape[-1] < target.shape[-2] * target.shape[-1]:
        pred = F.interpolate(pred.float(), size=target.shape[-2:], mode="bicubic", align_corners=False)
    else:
        target = F.interpolate(target.float(), size=pred.shape[-2:], mode="bicubic", align_corners=False)
    return pred, target


def patch_loss(pred: Tensor, target: Tensor, cfg: LossConfig) -> Tensor:
    """``alpha * cosine + beta * smooth-L1`` between two ``[B, C, h, w]`` maps after grid alignment."""
    pred, target = align_grids(pred, target)
    pred_tokens = pred.float().flatten(2).transpose(1, 2)  # [B, N, C]
    target_tokens = target.float().flatten(2).transpose(1, 2)
    cos = cosine_loss(pred_tokens, target_tokens)
    sl1 = F.smooth_l1_loss(pred_tokens, target_tokens, beta=cfg.smooth_l1_beta)
    return cfg.patch_cosine_weight * cos + cfg.patch_smooth_l1_weight * sl1


def distillation_loss(
    preds: dict[str, tuple[Tensor, Tensor]], targets: dict[str, TeacherOutput], cfg: LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its detached terms ``{"<teacher>/cls": ..., "<teacher>/patch": ...}``.

    ``preds[t]`` is the student's adapted ``(cls [B, C], patches [B, C, h, w])`` for teacher ``t``;
    ``targets[t]`` the normalised teacher output.
    """
    total = torch.zeros((), device=next(iter(preds.values()))[0].device)
    terms: dict[str, Tensor] = {}
    for name, (cls_pred, patch_pred) in preds.items():
        target = targets[name]
        cls_term = cosine_loss(cls_pred, target.summary)
        patch_term = patch_loss(patch_pred, target.patches, cfg)
        weight = cfg.teacher_weights.get(name, 1.0)
        total = total + weight * (cls_term + cfg.patch_weights.get(name, 1.0) * patch_term)
        terms[f"{name}/cls"] = cls_term.detach()
        terms[f"{name}/patch"] = patch_term.detach()
    return total, terms
