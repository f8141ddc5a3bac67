"""The teacher interface of the distillation recipe.

A teacher receives the *same augmented crop* as the student, as ``[B, 3, H, W]`` floats in [0, 1] (not
normalised). It resizes the crop to its own native resolution, applies its own input normalisation, runs frozen
(eval mode, ``inference_mode``, bf16 autocast where the hardware runs bf16 natively: CUDA, or CPUs with AMX) and
returns a :class:`TeacherOutput` in fp32: one summary vector per image and a patch-feature grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.device import fast_bf16


@dataclass
class TeacherOutput:
    summary: Tensor  # [B, summary_dim]
    patches: Tensor  # [B, patch_dim, h, w]


class Teacher(nn.Module):
    """Base class; subclasses implement :meth:`features` on resized, normalised inputs. Build teachers through
    :func:`~eupe.teachers.common.finalise`, which freezes them and measures ``summary_dim``/``patch_dim``."""

    def __init__(
        self,
        name: str,
        *,
        input_size: int | tuple[int, int],
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        autocast: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.summary_dim = self.patch_dim = 0  # output widths, measured by teachers.common.finalise
        self.autocast = autocast
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> TeacherOutput:
        """Runs the network on ``x``: resized to ``input_size`` and normalised."""
        raise NotImplementedError

    def preprocess(self, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        size = tuple(size) if size is not None else self.input_size
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # teachers are always frozen in eval mode

    def forward(self, images: Tensor, size: tuple[int, int] | None = None) -> TeacherOutput:
        """Outputs for ``images`` resized to ``size`` (default: the native ``input_size``)."""
        with torch.inference_mode():
            x = self.preprocess(images.float(), size)
            use_bf16 = self.autocast and fast_bf16(x.device)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = self.features(x)
        # Cloned outside inference mode: normal tensors that losses may save for backward.
        return TeacherOutput(out.summary.float().clone(), out.patches.float().clone())
