"""Per-channel residual scaling (LayerScale) and stochastic depth."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerScale(nn.Module):
    """Multiplies by a learned per-channel ``gamma``; :meth:`residual` fuses ``x + gamma * y`` in one kernel."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma

    def residual(self, x: Tensor, y: Tensor) -> Tensor:
        """``x + gamma * y``. Without autograd the sum is written into ``y``, which must be a fresh branch output
        (fewer large allocations: on CPU each new buffer costs page faults)."""
        if torch.is_grad_enabled() or y.dtype != x.dtype or y.shape != x.shape:
            return torch.addcmul(x, y, self.gamma)
        return torch.addcmul(x, y, self.gamma, out=y)


class DropPath(nn.Module):
    """Drops whole residual branches per sample during training (stochastic depth)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
