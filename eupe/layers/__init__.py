"""Building blocks shared by the EUPE model families (one small module per layer type)."""

from .attention import LinearKMaskedBias, SelfAttention
from .block import SelfAttentionBlock
from .layer_scale import DropPath, LayerScale
from .mlp import FFN_LAYERS, Mlp, SwiGLUFFN
from .norm import LayerNorm2d
from .patch_embed import PatchEmbed
from .rope import RopePositionEmbedding, apply_rope, rope_tables_with_prefix

__all__ = [
    "DropPath",
    "FFN_LAYERS",
    "LayerNorm2d",
    "LayerScale",
    "LinearKMaskedBias",
    "Mlp",
    "PatchEmbed",
    "RopePositionEmbedding",
    "SelfAttention",
    "SelfAttentionBlock",
    "SwiGLUFFN",
    "apply_rope",
    "rope_tables_with_prefix",
]
