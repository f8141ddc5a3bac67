"""Multi-head self-attention with optional masked key bias and RoPE, on fused scaled-dot-product attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import apply_rope, is_tracing


class LinearKMaskedBias(nn.Linear):
    """A qkv projection whose bias is multiplied by ``bias_mask`` (zero on the key third).

    DINOv3-style checkpoints store the mask as a buffer; it is re-derived here at construction time so that
    checkpoints lacking it still load, and a loaded mask overrides it.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3 != 0:
            raise ValueError(f"qkv projection needs out_features divisible by 3, got {out_features}")
        if bias:
            mask = torch.ones(out_features)
            mask[out_features // 3 : 2 * out_features // 3] = 0
            self.register_buffer("bias_mask", mask)

    def effective_bias(self) -> Tensor | None:
        """The bias actually added: ``bias * bias_mask`` (key third zeroed), or ``None`` without a bias."""
        return self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.effective_bias())


def qkv_bias(qkv: nn.Linear) -> Tensor | None:
    """The bias a qkv projection adds: the masked one of :class:`LinearKMaskedBias`, else the layer's own."""
    return qkv.effective_bias() if isinstance(qkv, LinearKMaskedBias) else qkv.bias


class SelfAttention(nn.Module):
    """Self-attention over ``[B, N, C]`` tokens; RoPE (if given) rotates queries and keys of all tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        linear_cls = LinearKMaskedBias if mask_k_bias else nn.Linear
        self.qkv = linear_cls(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if self._folds_qkv_bias(x):
            return self._forward_folding_qkv_bias(x, rope)
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            # One pass rotates queries and keys together: [2, B, heads, N, D].
            q, k = apply_rope(qkv[:2], *rope).unbind(0)
        else:
            q, k = qkv[0], qkv[1]
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self.proj(out.transpose(1, 2).reshape(B, N, C))

    def _folds_qkv_bias(self, x: Tensor) -> bool:
        """CPU inference with float linear layers (not quantised ones) and a qkv bias, outside graph capture."""
        return (x.device.type == "cpu" and not torch.is_grad_enabled() and not is_tracing()
                and isinstance(self.qkv, nn.Linear) and isinstance(self.proj, nn.Linear) and self.qkv.bias is not None)

    def _forward_folding_qkv_bias(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """The same attention without adding the qkv bias to the ``[B, N, 3C]`` projection (on CPU that costs a
        copy of the whole output): the query and key biases enter RoPE's first pass as a rotated ``[H, N, D]``
        table, and the value bias, which attention passes through unchanged (softmax rows sum to 1), is folded
        into the output projection's bias. Inference on CPU only; the numbers agree to float rounding."""
        B, N, C = x.shape
        H, D = self.num_heads, self.head_dim
        qkv = F.linear(x, self.qkv.weight).view(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
        bias = qkv_bias(self.qkv).view(3, 1, H, 1, D)  # (q/k/v, batch, head, token, dim)
        if rope is not None:
            rotated = apply_rope(bias[:2].expand(2, 1, H, N, D).float(), *rope)
            q, k = apply_rope(qkv[:2], *rope, rotated_bias=rotated).unbind(0)
        else:
            q, k = qkv[0] + bias[0], qkv[1] + bias[1]
        out = F.scaled_dot_product_attention(q, k, qkv[2]).transpose(1, 2).reshape(B, N, C)
        value_bias = bias[2].flatten().to(self.proj.weight.dtype)
        proj_bias = self.proj.weight @ value_bias
        if self.proj.bias is not None:
            proj_bias = proj_bias + self.proj.bias
        return F.linear(out, self.proj.weight, proj_bias)
