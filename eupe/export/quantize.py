"""PyTorch-native int8: dynamic quantisation of the Linear layers for CPU inference.

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

from .prepare import fold_masked_bias
from .verify import VerificationReport, sample_images, similarity_check


def quantize_int8(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An int8 dynamically quantised copy of ``model`` (CPU only); Linear layers run as int8 GEMMs."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("quantize_int8 targets CPU inference: move the model to CPU first (model.cpu()).")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("quantize_int8 needs an fp32 model; load it without dtype= (or call model.float()).")
    target = model if inplace else copy.deepcopy(model)
    fold_masked_bias(target.eval())
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (Deprecation- and UserWarnings); it still works.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)
    for attr in ("load_report", "projector_tensors"):
        if hasattr(model, attr):
            setattr(quantized, attr, getattr(model, attr))
    return quantized


def verify_quantized(
    model: nn.Module, quantized: nn.Module, *, size: int = 256, threshold: float = 0.99, count: int = 4
) -> VerificationReport:
    """Cosine similarity of the quantised model's class/patch tokens with the fp32 model's on real photos."""

    def tokens(m: nn.Module):
        def run(x):
            f = m.forward_features(x)
            return f["x_norm_clstoken"], f["x_norm_patchtokens"]
        return run

    return similarity_check(tokens(model), tokens(quantized), sample_images(size, count), threshold=threshold,
                            label="torch int8")
