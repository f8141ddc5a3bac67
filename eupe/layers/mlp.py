"""Feed-forward layers: the GELU MLP of the EUPE students and the SwiGLU FFN of ViT-H+ class models."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """``w3(silu(w1 x) * w2 x)``; the hidden width is 2/3 of ``hidden_features`` rounded up to ``align_to``."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True, align_to: int = 8) -> None:
        super().__init__()
        d = int(hidden_features * 2 / 3)
        hidden = d + (-d % align_to)
        self.w1 = nn.Linear(in_features, hidden, bias=bias)
        self.w2 = nn.Linear(in_features, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


FFN_LAYERS = {"mlp": Mlp, "swiglu": SwiGLUFFN}
