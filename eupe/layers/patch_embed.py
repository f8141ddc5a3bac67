"""Non-overlapping patch embedding; pixels beyond the last full patch are dropped (crop to a multiple)."""

from __future__ import annotations

import math

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """``[B, C, H, W] -> [B, H//p, W//p, D]`` with a stride-``p`` convolution."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def reset_parameters(self) -> None:
        bound = math.sqrt(1 / (self.in_chans * self.patch_size**2))
        nn.init.uniform_(self.proj.weight, -bound, bound)
        if self.proj.bias is not None:
            nn.init.uniform_(self.proj.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)
