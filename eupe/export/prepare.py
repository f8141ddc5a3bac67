"""Turn a backbone into an export-ready module with a flat tensor interface.

Exporters need (1) a forward that returns a tuple of tensors instead of the feature dict, (2) RoPE tables
computed from the traced input size rather than taken from the eager cache (a cached table would be baked into
the graph as a constant of the example's size; the RoPE layer itself skips its cache while tracing or
exporting), (3) plain ``nn.Linear`` layers (the masked-key-bias qkv
projection is folded into an ordinary bias, so quantisers and converters see standard layers) and (4) no
LayerScale multiplications (each ``gamma`` is folded into the linear layer before it: one op less per residual
branch). All of this is done on a copy: the caller's model is left untouched.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from ..layers import SelfAttentionBlock
from ..models import ConvNeXt, Projectors, VisionTransformer
from ..models.convnext import ConvNeXtBlock
from ..models.int8 import fold_masked_bias

OUTPUT_NAMES = ("class_token", "patch_tokens", "storage_tokens")
INPUT_NAME = "pixel_values"


class ExportError(ValueError):
    """An export request that cannot be carried out as asked (format, model or size)."""


class FeatureOutputs(nn.Module):
    """``x -> (class_token [B, D], patch_tokens [B, N, D][, storage_tokens [B, S, D]])``."""

    def __init__(self, backbone: nn.Module, storage_tokens: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.storage_tokens = storage_tokens

    @property
    def output_names(self) -> list[str]:
        return list(OUTPUT_NAMES[: 3 if self.storage_tokens else 2])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        f = self.backbone.forward_features(x)
        out = (f["x_norm_clstoken"], f["x_norm_patchtokens"])
        return out + (f["x_storage_tokens"],) if self.storage_tokens else out


def eager_reference(model: nn.Module, storage_tokens: bool = False) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """``x -> FeatureOutputs`` of ``model`` exactly as given (no folding, eager RoPE cache), run in eval mode and
    left in its own mode afterwards: what every export is verified against, so the check covers the export's own
    graph rewrites (:func:`export_ready`) too."""
    outputs = FeatureOutputs(model, storage_tokens)

    def run(x: Tensor) -> tuple[Tensor, ...]:
        was_training = model.training
        model.eval()
        try:
            return outputs(x)
        finally:
            model.train(was_training)

    return run


def input_stride(model: nn.Module) -> int:
    """The size multiple an input must have: the ViT patch size, or ConvNeXt's output stride of 32."""
    if isinstance(model, FeatureOutputs):
        model = model.backbone
    if isinstance(model, (VisionTransformer, ConvNeXt)):
        return int(model.feature_stride)
    raise ExportError(f"Cannot export {type(model).__name__}: only eupe VisionTransformer and ConvNeXt backbones.")


def check_size(model: nn.Module, height: int, width: int) -> None:
    """Rejects sizes that are not multiples of the stride (they would be cropped) or below two strides."""
    stride = input_stride(model)
    if height < 2 * stride or width < 2 * stride or height % stride or width % stride:
        raise ExportError(
            f"Input size {height}x{width} is not a multiple of {stride} (the stride of {type(model).__name__}) of "
            f"at least {2 * stride}; choose e.g. --size {max(2 * stride, round(height / stride) * stride)}."
        )


def verification_sizes(size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Three input sizes for parity checks: the export size and two other ones, at least one non-square."""
    h, w = size
    low = 2 * stride  # torch.export specialises a size-1 grid axis, so dynamic graphs start at 2 units
    sizes = [(h, w), (max(low, h - stride), w + 2 * stride), (h + 2 * stride, max(low, w - stride))]
    return list(dict.fromkeys(sizes))


def dynamic_shapes(stride: int, height: int, width: int) -> tuple[dict, ...]:
    """``torch.export`` dynamic shapes for the single image input: free batch, H and W multiples of ``stride``.

    Each side is ``stride * k`` with ``k >= 2`` (a grid of one unit would be specialised by the tracer).
    """
    from torch.export import Dim

    h = stride * Dim("h_units", min=2, max=max(512, 4 * height // stride))
    w = stride * Dim("w_units", min=2, max=max(512, 4 * width // stride))
    return ({0: Dim("batch", min=1, max=4096), 2: h, 3: w},)


@torch.no_grad()
def _scale_outputs(linear: nn.Linear, gamma: Tensor) -> None:
    linear.weight.mul_(gamma[:, None])
    if linear.bias is not None:
        linear.bias.mul_(gamma)


def fold_layerscale(model: nn.Module) -> nn.Module:
    """Folds every LayerScale ``gamma`` (in place) into the output rows of the linear layer that feeds it.

    ``x + gamma * (W y + b) == x + (diag(gamma) W) y + gamma * b``: equal up to float rounding.
    """
    for module in model.modules():
        if isinstance(module, SelfAttentionBlock):
            ffn_output = list(module.mlp.children())[-1]  # Mlp.fc2 / SwiGLUFFN.w3
            for attr, linear in (("ls1", module.attn.proj), ("ls2", ffn_output)):
                scale = getattr(module, attr)
                if scale is not None and isinstance(linear, nn.Linear) and module.drop_path is None:
                    _scale_outputs(linear, scale.gamma)
                    setattr(module, attr, None)
        elif isinstance(module, ConvNeXtBlock) and module.gamma is not None:
            _scale_outputs(module.pwconv2, module.gamma)
            module.gamma = None
    return model


def export_ready(model: nn.Module, *, storage_tokens: bool = False) -> FeatureOutputs:
    """An eval-mode copy of ``model`` wrapped in :class:`FeatureOutputs`, with folded biases and LayerScales."""
    input_stride(model)  # rejects unsupported model types early
    if storage_tokens and not getattr(model, "n_storage_tokens", 0):
        raise ExportError(f"{type(model).__name__} has no storage tokens; drop --storage-tokens.")
    model = copy.deepcopy(model).eval().requires_grad_(False)
    model.projectors = Projectors()  # graphs compute features only; the heads are not part of them
    model = fold_layerscale(fold_masked_bias(model))
    return FeatureOutputs(model, storage_tokens).eval()
