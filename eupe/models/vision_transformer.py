"""The DINOv3-style Vision Transformer used by the EUPE ViT students, the teachers and the proxy.

Patch embedding -> [class token, storage tokens, patches] -> pre-norm blocks with axial RoPE -> LayerNorm.
The module and parameter names reproduce the reference checkpoints' key layout exactly, so a state dict moves
between this package and the reference code unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..layers import LayerScale, PatchEmbed, RopePositionEmbedding, SelfAttentionBlock
from .base import Backbone, FeatureDict, feature_dict, format_intermediate_outputs, resolve_layer_indices
from .registry import PretrainedCfg, register_model

# The reference's norm-layer names; "layernormbf16" is a plain LayerNorm with eps 1e-5.
NORM_EPS = {"layernorm": 1e-6, "layernormbf16": 1e-5}


class VisionTransformer(Backbone):
    """ViT with RoPE, storage (register) tokens, LayerScale and an optionally masked key bias.

    Keyword names follow the reference ``DinoVisionTransformer`` so that its architecture arguments can be passed
    as they are. ``img_size`` is accepted for compatibility only: RoPE makes the model resolution-free.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        ffn_ratio: float = 4.0,
        ffn_layer: str = "mlp",
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        mask_k_bias: bool = False,
        layerscale_init: float | None = None,
        n_storage_tokens: int = 0,
        norm_layer: str = "layernorm",
        drop_path_rate: float = 0.0,
        pos_embed_rope_base: float | None = 100.0,
        pos_embed_rope_min_period: float | None = None,
        pos_embed_rope_max_period: float | None = None,
        pos_embed_rope_normalize_coords: str = "separate",
        pos_embed_rope_shift_coords: float | None = None,
        pos_embed_rope_jitter_coords: float | None = None,
        pos_embed_rope_rescale_coords: float | None = None,
        pos_embed_rope_dtype: str = "fp32",
    ) -> None:
        super().__init__()
        if norm_layer not in NORM_EPS:
            raise ValueError(f"Unknown norm_layer {norm_layer!r}; choose one of {sorted(NORM_EPS)}")
        if pos_embed_rope_dtype != "fp32":
            raise ValueError("Only pos_embed_rope_dtype='fp32' is supported: RoPE tables are always computed in fp32.")
        del img_size
        self.embed_dim = self.num_features = embed_dim
        self.n_blocks = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.n_storage_tokens = n_storage_tokens

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if n_storage_tokens > 0:
            self.storage_tokens = nn.Parameter(torch.zeros(1, n_storage_tokens, embed_dim))
        self.rope_embed = RopePositionEmbedding(
            embed_dim,
            num_heads=num_heads,
            base=pos_embed_rope_base,
            min_period=pos_embed_rope_min_period,
            max_period=pos_embed_rope_max_period,
            normalize_coords=pos_embed_rope_normalize_coords,  # type: ignore[arg-type]
            shift_coords=pos_embed_rope_shift_coords,
            jitter_coords=pos_embed_rope_jitter_coords,
            rescale_coords=pos_embed_rope_rescale_coords,
        )
        eps = NORM_EPS[norm_layer]
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                embed_dim,
                num_heads,
                ffn_ratio=ffn_ratio,
                ffn_layer=ffn_layer,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                mask_k_bias=mask_k_bias,
                layerscale_init=layerscale_init,
                drop_path=dpr[i],
                norm_layer=lambda d: nn.LayerNorm(d, eps=eps),
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.init_weights()

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.n_storage_tokens

    @property
    def feature_stride(self) -> int:
        return self.patch_size

    def init_weights(self) -> None:
        """Random initialisation as in the reference (truncated normal 0.02 for linear layers)."""
        nn.init.normal_(self.cls_token, std=0.02)
        if self.n_storage_tokens > 0:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, LayerScale, PatchEmbed)):
                module.reset_parameters()


    def prepare_tokens(self, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, tuple[int, int]]:
        """Embeds patches (masked ones replaced by ``mask_token``) and prepends class and storage tokens."""
        x = self.patch_embed(x)
        B, H, W, _ = x.shape
        x = x.flatten(1, 2)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        # `0 * mask_token` keeps mask_token in the graph so DDP sees every parameter used.
        prefix = self.cls_token + 0 * self.mask_token
        if self.n_storage_tokens > 0:
            prefix = torch.cat([prefix, self.storage_tokens], dim=1)
        return torch.cat([prefix.expand(B, -1, -1), x], dim=1), (H, W)

    def _run_blocks(self, x: Tensor, grid: tuple[int, int], last_block: int | None = None, take: set[int] = ()):
        rope = self.rope_embed.tables(grid[0], grid[1], self.num_prefix_tokens)
        taken = []
        for i, blk in enumerate(self.blocks[: None if last_block is None else last_block + 1]):
            x = self._checkpointed(blk, x, rope)
            if i in take:
                taken.append(x)
        return x, taken

    def _forward_features_single(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        tokens, grid = self.prepare_tokens(x, masks)
        tokens, _ = self._run_blocks(tokens, grid)
        return feature_dict(self.norm(tokens), self.num_prefix_tokens, tokens, masks)

    def _block_outputs(self, x: Tensor, layers: Sequence[int], norm: bool,
                       run_all: bool = False) -> tuple[Tensor, list[Tensor], tuple[int, int]]:
        """(last block's output, the outputs of ``layers`` in block order, normed if ``norm``, patch grid); blocks
        after the last requested one run only with ``run_all``."""
        tokens, grid = self.prepare_tokens(x)
        last, outputs = self._run_blocks(tokens, grid, last_block=None if run_all else max(layers), take=set(layers))
        return last, [self.norm(out) for out in outputs] if norm else outputs, grid

    def get_intermediate_layers(
        self,
        x: Tensor,
        *,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_extra_tokens: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of the last ``n`` blocks (int) or of the given block indices (sequence).

        Patch tokens come as ``[B, N, D]`` or, with ``reshape``, ``[B, D, h, w]``; with ``return_class_token`` /
        ``return_extra_tokens`` each entry is a tuple ``(patches, cls[, storage])`` as in the reference.
        """
        _, outputs, grid = self._block_outputs(x, resolve_layer_indices(n, len(self.blocks)), norm)
        p = self.num_prefix_tokens
        patches = [out[:, p:] for out in outputs]
        if reshape:
            patches = [_grid_map(out, grid) for out in patches]
        return format_intermediate_outputs(
            patches,
            [out[:, 0] for out in outputs],
            [out[:, 1:p] for out in outputs],
            return_class_token,
            return_extra_tokens,
        )



    @property
    def feature_info(self) -> list[dict[str, Any]]:
        return [{"num_chs": self.embed_dim, "reduction": self.patch_size, "module": f"blocks.{i}"}
                for i in range(self.n_blocks)]

    def _intermediate_maps(self, x: Tensor, layers: list[int], norm: bool,
                           final: bool) -> tuple[list[Tensor], Tensor | None]:
        last, outputs, grid = self._block_outputs(x, layers, norm, run_all=final)
        maps = [_grid_map(out[:, self.num_prefix_tokens:], grid) for out in outputs]
        return maps, (self.norm(last) if final else None)


def _grid_map(patch_tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[B, h*w, D]`` patch tokens as a ``[B, D, h, w]`` map."""
    return patch_tokens.unflatten(1, grid).permute(0, 3, 1, 2).contiguous()


# ---- architectures -------------------------------------------------------------------------------------------

_EUPE_VIT = dict(
    patch_size=16,
    ffn_ratio=4.0,
    ffn_layer="mlp",
    qkv_bias=True,
    proj_bias=True,
    ffn_bias=True,
    mask_k_bias=True,
    layerscale_init=1e-5,
    n_storage_tokens=4,
    norm_layer="layernormbf16",
    pos_embed_rope_base=100.0,
    pos_embed_rope_normalize_coords="separate",
    pos_embed_rope_rescale_coords=2.0,
)


def _eupe_pretrained(size: str) -> PretrainedCfg:
    return PretrainedCfg(hf_hub_id=f"facebook/EUPE-ViT-{size}", filename=f"EUPE-ViT-{size}.pt")


register_model("eupe_vitt16", VisionTransformer, dict(_EUPE_VIT, embed_dim=192, depth=12, num_heads=3),
               pretrained=_eupe_pretrained("T"), description="EUPE ViT-T/16 student")
register_model("eupe_vits16", VisionTransformer, dict(_EUPE_VIT, embed_dim=384, depth=12, num_heads=6),
               pretrained=_eupe_pretrained("S"), description="EUPE ViT-S/16 student")
register_model("eupe_vitb16", VisionTransformer, dict(_EUPE_VIT, embed_dim=768, depth=12, num_heads=12),
               pretrained=_eupe_pretrained("B"), description="EUPE ViT-B/16 student")
# Teacher / proxy sizes of the recipe, in the DINOv3 checkpoint layout.
register_model("vitl16", VisionTransformer, dict(_EUPE_VIT, embed_dim=1024, depth=24, num_heads=16),
               description="ViT-L/16 (DINOv3 layout)")
register_model("vith16plus", VisionTransformer,
               dict(_EUPE_VIT, embed_dim=1280, depth=32, num_heads=20, ffn_ratio=6.0, ffn_layer="swiglu"),
               description="ViT-H+/16 with SwiGLU FFN (DINOv3-H+ layout)")
# The paper's proxy is "1.9B, 4 registers" without a shape. We take a PE-G-like width/depth (1536 x 50) with a
# plain GELU MLP of ratio 6 and head dim 64: 1.89B parameters, patch 16 so its grid matches the students'.
register_model("eupe_proxy_vitg16", VisionTransformer,
               dict(_EUPE_VIT, embed_dim=1536, depth=50, num_heads=24, ffn_ratio=6.0),
               description="EUPE stage-1 proxy ViT-G/16 (shape chosen here, the paper leaves it open)")
