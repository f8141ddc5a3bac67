"""PyTorch-native int8: dynamic quantisation of the Linear layers for CPU inference (``eupe.load(quantize="int8")``).

Weights are stored as int8 and activations are quantised on the fly per batch, which needs no calibration data
and keeps the model a drop-in replacement (same inputs, same feature dict). Uses
``torch.ao.quantization.quantize_dynamic`` (still shipped with torch 2.13; torchao's ``quantize_`` is the
successor but an extra dependency). The masked-key-bias qkv projections are folded into plain ``nn.Linear``
first, as the quantiser only swaps exact ``nn.Linear`` types.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..layers import LinearKMaskedBias


def _plain_linear(layer: LinearKMaskedBias) -> nn.Linear:
    linear = nn.Linear(layer.in_features, layer.out_features, bias=True,
                       device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(layer.weight)
        linear.bias.copy_(layer.effective_bias())
    return linear


def fold_masked_bias(model: nn.Module) -> nn.Module:
    """Replaces every :class:`LinearKMaskedBias` (in place) by an ``nn.Linear`` with the masked bias folded in."""
    for name, child in list(model.named_children()):
        if isinstance(child, LinearKMaskedBias) and child.bias is not None:
            setattr(model, name, _plain_linear(child))
        else:
            fold_masked_bias(child)
    return model


def quantize_int8(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An int8 dynamically quantised copy of ``model`` (CPU only); Linear layers run as int8 GEMMs.

    The adapter heads (``model.projectors``) are quantised like every other Linear layer.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("quantize_int8 targets CPU inference: move the model to CPU first (model.cpu()).")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("quantize_int8 needs an fp32 model; load it without dtype= (or call model.float()).")
    target = model if inplace else copy.deepcopy(model)
    fold_masked_bias(target.eval())
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (Deprecation- and UserWarnings); it still works.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)
