"""TorchScript (``torch.jit.trace``) and ``torch.export`` (``.pt2``) programs for C++, mobile and AOT users.

Both keep dynamic batch and height/width (RoPE tables are computed from the traced shapes) and are verified by
reloading the saved file and comparing it with eager PyTorch at three input sizes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..utils.io import atomic_path
from .prepare import check_size, dynamic_shapes, export_ready, input_stride, verification_sizes
from .verify import VerificationReport, verify_export


def export_torchscript(
    model: nn.Module, output: str | Path, *, size: tuple[int, int] = (256, 256), storage_tokens: bool = False,
    verify: bool = True, atol: float = 1e-4,
) -> VerificationReport:
    """Traces ``model`` to TorchScript (``torch.jit.load``-able, also from C++ ``torch::jit::load``)."""
    check_size(model, *size)
    wrapper = export_ready(model, storage_tokens=storage_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
        traced = torch.jit.trace(wrapper, torch.randn(2, 3, *size), check_trace=False)
        with atomic_path(output) as tmp:
            torch.jit.save(traced, str(tmp))
        if not verify:
            return VerificationReport()
        reloaded = torch.jit.load(str(output))
    return verify_export(model, reloaded, verification_sizes(size, input_stride(model)),
                         what=f"TorchScript file {output}", label="torchscript", storage_tokens=storage_tokens,
                         atol=atol)


def export_program(
    model: nn.Module, output: str | Path, *, size: tuple[int, int] = (256, 256), storage_tokens: bool = False,
    verify: bool = True, atol: float = 1e-4,
) -> VerificationReport:
    """Saves a ``torch.export`` program (``.pt2``, load with ``torch.export.load(path).module()``)."""
    check_size(model, *size)
    wrapper = export_ready(model, storage_tokens=storage_tokens)
    example = torch.randn(2, 3, *size)
    program = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes(input_stride(model), *size))
    with atomic_path(output) as tmp:
        torch.export.save(program, str(tmp))
    if not verify:
        return VerificationReport()
    reloaded = torch.export.load(str(output)).module()
    return verify_export(model, reloaded, verification_sizes(size, input_stride(model)),
                         what=f"torch.export program {output}", label="torch.export program",
                         storage_tokens=storage_tokens, atol=atol)
