"""Feed-forward layers: the GELU MLP of the EUPE students and the SwiGLU FFN of ViT-H+ class models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``; without autograd the GELU runs in place (one large buffer less per block)."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        return self.fc2(self.act(hidden) if torch.is_grad_enabled() else torch.ops.aten.gelu_(hidden))


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
        gate = self.w1(x)
        if torch.is_grad_enabled():
            return self.w3(F.silu(gate) * self.w2(x))
        return self.w3(F.silu(gate, inplace=True).mul_(self.w2(x)))


FFN_LAYERS = {"mlp": Mlp, "swiglu": SwiGLUFFN}
