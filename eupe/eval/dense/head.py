"""The linear probe head of the dense protocols: BatchNorm, then one linear map per token."""

from __future__ import annotations

from torch import Tensor, nn


class LinearProbeHead(nn.Module):
    """BatchNorm over the feature channels, then a 1x1 convolution: one linear map per token."""

    def __init__(self, in_dim: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.out_channels = in_dim, out_channels
        self.norm = nn.BatchNorm2d(in_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_dim, out_channels, kernel_size=1)
        nn.init.normal_(self.conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.conv(self.dropout(self.norm(features)))
