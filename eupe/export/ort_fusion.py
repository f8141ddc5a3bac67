"""ONNX files tuned for onnxruntime: fused multi-head attention plus onnxruntime's transformer fusions.

A portable ONNX file spells attention as MatMul/Softmax/MatMul with transposes around it and GELU as Erf
arithmetic. With ``optimize=True`` the exporter instead

1. applies RoPE in token-major layout (``[B, N, heads, D]``), so queries, keys and values reach attention as
   ``[B, N, C]`` without any transpose, and calls :func:`multi_head_attention`, a custom op that the exporters
   translate to onnxruntime's ``com.microsoft.MultiHeadAttention`` contrib op;
2. runs onnxruntime's transformer optimizer on the written file (bias + GELU -> ``BiasGelu``).

The result runs in onnxruntime only (contrib ops); the default, portable file runs anywhere.
"""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import SelfAttention
from ..layers.rope import apply_rope
from ..utils.logs import quiet
from ..utils.optional import require

if TYPE_CHECKING:
    from onnx.defs import OpSchema

CONTRIB_DOMAIN = "com.microsoft"


@torch.library.custom_op("eupe::multi_head_attention", mutates_args=())
def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:
    """Softmax attention of ``[B, N, C]`` queries/keys/values split into ``num_heads`` heads -> ``[B, N, C]``."""
    B, N, C = q.shape

    def heads(t: Tensor) -> Tensor:
        return t.reshape(B, -1, num_heads, C // num_heads).transpose(1, 2)

    return F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(B, N, C)


@multi_head_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:
    return torch.empty_like(q)


def _token_major_attention(self: SelfAttention, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """:meth:`SelfAttention.forward` with the same numbers, laid out for ``MultiHeadAttention``."""
    B, N, C = x.shape
    q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # [B, N, heads, D]
    if rope is not None:
        signed_sin, cos = (t.unsqueeze(-2) for t in rope)  # [N, 1, D]: the same rotation for every head
        q, k = apply_rope(q, signed_sin, cos), apply_rope(k, signed_sin, cos)
    out = multi_head_attention(q.reshape(B, N, C), k.reshape(B, N, C), v.reshape(B, N, C), self.num_heads)
    return self.proj(out)


def use_fused_attention(model: nn.Module) -> nn.Module:
    """Switches every :class:`SelfAttention` of ``model`` (in place) to the ``MultiHeadAttention`` form."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.forward = types.MethodType(_token_major_attention, module)
    return model


def _mha_schema() -> OpSchema:
    """The part of the contrib op's signature we use (the onnx package ships no schemas for contrib ops)."""
    from onnx.defs import OpSchema

    tensor = OpSchema.FormalParameter
    return OpSchema(
        "MultiHeadAttention", CONTRIB_DOMAIN, 1,
        inputs=[tensor("query", "T"), tensor("key", "T"), tensor("value", "T")],
        outputs=[tensor("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads")],
    )


def dynamo_translations() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: our op -> the contrib op."""
    onnxscript = require("onnxscript", "ONNX export with the dynamo exporter")
    mha = onnxscript.values.Op(onnxscript.values.Opset(CONTRIB_DOMAIN, 1), "MultiHeadAttention", _mha_schema())

    def translate(q, k, v, num_heads: int):
        return mha(q, k, v, num_heads=num_heads)

    return {torch.ops.eupe.multi_head_attention.default: translate}


def register_torchscript_symbolic(opset: int) -> None:
    """Lets the tracing exporter write our op as the contrib op (idempotent)."""
    from torch.onnx import symbolic_helper

    def symbolic(g, q, k, v, num_heads):
        heads = symbolic_helper._get_const(num_heads, "i", "num_heads")
        return g.op(f"{CONTRIB_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=heads)

    torch.onnx.register_custom_op_symbolic("eupe::multi_head_attention", symbolic, opset)


def apply_transformer_fusions(path: str | Path) -> dict[str, int]:
    """Rewrites the ONNX file at ``path`` with onnxruntime's transformer fusions; returns its contrib-op counts."""
    require("onnxruntime", "onnxruntime-optimised ONNX export")
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    options.enable_attention = False  # attention is already MultiHeadAttention; RoPE defeats the pattern anyway
    # SkipLayerNormalization measured slower than Add + LayerNormalization on CPU (ViT-S, 256, batch 8, int8:
    # 534 vs 424 ms on 2 cores), so residual adds stay separate.
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    with quiet():  # the optimizer logs every fusion and the save at INFO
        optimized = optimize_model(str(path), model_type="vit", num_heads=0, hidden_size=0, opt_level=0,
                                   optimization_options=options)
        optimized.save_model_to_file(str(path))
    return dict(Counter(node.op_type for node in optimized.model.graph.node if node.domain == CONTRIB_DOMAIN))
