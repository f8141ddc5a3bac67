"""The DINOv3 ConvNeXt used by the EUPE ConvNeXt students.

Four stages of depthwise-conv blocks; ``forward_features`` returns a pseudo class token (global average pool of
the last stage) normalised together with the stride-32 patch tokens, in the ViTs' output layout.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import DropPath, LayerNorm2d
from .base import Backbone, FeatureDict, feature_dict, format_intermediate_outputs, resolve_layer_indices
from .registry import PretrainedCfg, register_model


class ConvNeXtBlock(nn.Module):
    """``x + gamma * pwconv2(GELU(pwconv1(LN(dwconv(x)))))``, computed channels-last."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))))
        if self.gamma is not None:
            y = y * self.gamma
        y = y.permute(0, 3, 1, 2)
        return x + (self.drop_path(y) if self.drop_path is not None else y)


class ConvNeXt(Backbone):
    """ConvNeXt backbone; ``patch_size`` (optional) resizes intermediate maps to a ViT grid of that patch size."""

    feature_stride = 32  # stem 4 x three 2x downsamplings

    def __init__(
        self,
        *,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        patch_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 stages, got depths={list(depths)} dims={list(dims)}")
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))]
            + [
                nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
                for i in range(3)
            ]
        )
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dims[i], rates[starts[i] + j], layer_scale_init_value) for j in range(d)])
            for i, d in enumerate(depths)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        # Per-stage output norms of the reference; only the last one is a real (shared) LayerNorm.
        self.norms = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(), self.norm])
        self.head = nn.Identity()
        self.embed_dim = self.num_features = dims[-1]
        self.dims = tuple(dims)
        self.n_blocks = 4
        self.n_storage_tokens = 0
        self.patch_size = patch_size
        self.init_weights()

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()


    def _stage(self, i: int, x: Tensor) -> Tensor:
        return self._checkpointed(self.stages[i], self.downsample_layers[i](x))

    def _forward_features_single(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        for i in range(4):
            x = self._stage(i, x)
        pooled = x.mean((-2, -1))
        patches = x.flatten(2).transpose(1, 2)
        x_norm = self.norm(torch.cat([pooled.unsqueeze(1), patches], dim=1))
        return feature_dict(x_norm, 1, patches, masks)

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
        """Stage outputs: the last ``n`` stages (int) or the given stage indices, in the reference's layout.

        Stage maps are resized to ``(H // patch_size, W // patch_size)`` when ``patch_size`` is set. Extra tokens
        (storage tokens) are empty for ConvNeXt; they are accepted for a uniform API.
        """
        h, w = x.shape[-2:]
        indices = resolve_layer_indices(n, 4)
        patches, class_tokens = [], []
        for i in range(max(indices) + 1):
            x = self._stage(i, x)
            if i not in indices:
                continue
            pooled, maps = x.mean((-2, -1)), x
            if self.patch_size is not None:
                size = (h // self.patch_size, w // self.patch_size)
                maps = F.interpolate(x, size=size, mode="bilinear", antialias=True)
            if norm:
                stage_norm = self.norms[i]
                pooled = stage_norm(pooled)
                tokens = stage_norm(maps.flatten(2).transpose(1, 2))
                maps = tokens.transpose(1, 2).reshape(maps.shape).contiguous() if reshape else tokens
            elif not reshape:
                maps = maps.flatten(2).transpose(1, 2)
            patches.append(maps)
            class_tokens.append(pooled)
        empty = [c.new_zeros(c.shape[0], 0, c.shape[-1]) for c in class_tokens]
        return format_intermediate_outputs(patches, class_tokens, empty, return_class_token, return_extra_tokens)

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        return [{"num_chs": dim, "reduction": 4 * 2**i, "module": f"stages.{i}"} for i, dim in enumerate(self.dims)]

    def _intermediate_maps(self, x: Tensor, layers: list[int], norm: bool,
                           final: bool) -> tuple[list[Tensor], Tensor | None]:
        maps = []
        for i in range(4 if final else layers[-1] + 1):
            x = self._stage(i, x)
            if i in layers:  # the stage norms work on channels: applied channels-last
                maps.append(self.norms[i](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous() if norm else x)
        return maps, (x if final else None)



CONVNEXT_SIZES = {
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}

for _size, _letter in (("tiny", "T"), ("small", "S"), ("base", "B")):
    register_model(
        f"eupe_convnext_{_size}",
        ConvNeXt,
        CONVNEXT_SIZES[_size],
        pretrained=PretrainedCfg(hf_hub_id=f"facebook/EUPE-ConvNeXt-{_letter}", filename=f"EUPE-ConvNeXt-{_letter}.pt"),
        description=f"EUPE ConvNeXt-{_size.capitalize()} student",
    )
