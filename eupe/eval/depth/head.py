"""The depth probe's head (BatchNorm + 1x1 linear over depth bins, AdaBins-style classification-regression) and
its scale-invariant log loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..dense.head import LinearProbeHead

BinStrategy = Literal["linear", "log"]
NormStrategy = Literal["linear", "softmax", "sigmoid"]


def bin_centres(min_depth: float, max_depth: float, n_bins: int, strategy: BinStrategy = "linear") -> Tensor:
    """Depth value of each bin: evenly spaced in depth ("linear") or in log-depth ("log")."""
    if strategy == "linear":
        return torch.linspace(min_depth, max_depth, n_bins)
    if strategy == "log":
        return torch.linspace(torch.tensor(min_depth).log(), torch.tensor(max_depth).log(), n_bins).exp()
    raise ValueError(f"unknown bin strategy {strategy!r}; use 'linear' or 'log'")


def bins_to_depth(logits: Tensor, centres: Tensor, strategy: NormStrategy = "linear", eps: float = 0.1) -> Tensor:
    """``[B, n_bins, h, w]`` scores -> ``[B, 1, h, w]`` depth, the bin centres weighted by normalised scores.

    "linear" (the reference default): ReLU(scores) + eps, divided by their sum; "softmax"; "sigmoid" then divided by
    the sum.
    """
    if strategy == "linear":
        weights = torch.relu(logits) + eps
    elif strategy == "softmax":
        weights = torch.softmax(logits, dim=1)
    elif strategy == "sigmoid":
        weights = torch.sigmoid(logits)
    else:
        raise ValueError(f"unknown bin normalisation {strategy!r}; use 'linear', 'softmax' or 'sigmoid'")
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.einsum("bkhw,k->bhw", weights, centres.to(weights))[:, None]


class DepthHead(LinearProbeHead):
    """Linear probe over ``n_bins`` depth bins; ``forward`` returns depth in metres at the token grid."""

    def __init__(self, in_dim: int, n_bins: int = 256, min_depth: float = 0.001, max_depth: float = 10.0,
                 bin_strategy: BinStrategy = "linear", norm_strategy: NormStrategy = "linear") -> None:
        super().__init__(in_dim, n_bins)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.norm_strategy = norm_strategy
        self.register_buffer("centres", bin_centres(min_depth, max_depth, n_bins, bin_strategy), persistent=False)

    def forward(self, features: Tensor) -> Tensor:
        return bins_to_depth(super().forward(features), self.centres, self.norm_strategy)


class SigLoss(nn.Module):
    """Scale-invariant log loss: sqrt(Var(g) + 0.15 * mean(g)^2), g = log(pred + eps) - log(gt + eps), on valid
    pixels. During the first ``warmup_iters`` calls only the mean term is used (as the reference), which steadies the
    start of training."""

    def __init__(self, lam: float = 0.15, eps: float = 1e-3, warmup_iters: int = 100) -> None:
        super().__init__()
        self.lam, self.eps, self.warmup_iters = lam, eps, warmup_iters
        self.calls = 0

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        g = torch.log(pred[valid] + self.eps) - torch.log(target[valid] + self.eps)
        if g.numel() < 2:
            return pred.sum() * 0.0  # no valid pixel in this batch: a zero loss that keeps the graph
        loss = self.lam * g.mean() ** 2
        if self.calls >= self.warmup_iters:
            loss = loss + g.var()
        self.calls += 1
        return torch.sqrt(loss.clamp(min=1e-12))
