"""Pre-norm transformer block: ``x + ls1(attn(norm1(x))) -> x + ls2(ffn(norm2(x)))``."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .attention import SelfAttention
from .layer_scale import DropPath, LayerScale
from .mlp import FFN_LAYERS


class SelfAttentionBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        ffn_ratio: float = 4.0,
        ffn_layer: str = "mlp",
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        mask_k_bias: bool = False,
        layerscale_init: float | None = None,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"Unknown ffn_layer {ffn_layer!r}; choose one of {sorted(FFN_LAYERS)}")
        self.norm1 = norm_layer(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else None
        self.norm2 = norm_layer(dim)
        self.mlp = FFN_LAYERS[ffn_layer](dim, int(dim * ffn_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def _add(self, x: Tensor, y: Tensor, scale: LayerScale | None) -> Tensor:
        if self.drop_path is not None:
            return x + self.drop_path(scale(y) if scale is not None else y)
        if scale is not None:
            return scale.residual(x, y)  # y is this block's fresh branch output
        return x + y

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self._add(x, self.attn(self.norm1(x), rope), self.ls1)
        return self._add(x, self.mlp(self.norm2(x)), self.ls2)
