"""Checkpoint conversion to ``.safetensors`` (no pickle: safe to load, memory-mappable), adapter heads included."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..loading import read_state_dict
from ..utils.io import atomic_path
from .verify import Check, VerificationReport


def _save(tensors: dict[str, Tensor], output: str | Path, metadata: dict[str, str]) -> VerificationReport:
    from safetensors.torch import load_file, save_file

    # safetensors refuses aliased storage; independent contiguous copies are what the file holds anyway.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})
    reloaded = load_file(str(output))
    same = reloaded.keys() == tensors.keys() and all(torch.equal(reloaded[k], v) for k, v in tensors.items())
    return VerificationReport([Check(f"safetensors round trip of {len(tensors)} tensors (mismatches)",
                                     0.0 if same else 1.0, 0.0)])


def checkpoint_to_safetensors(source: str | Path, output: str | Path) -> VerificationReport:
    """Converts any checkpoint ``read_state_dict`` accepts (incl. ``projectors.*``) to ``.safetensors``."""
    report = _save(read_state_dict(source), output, {"source": Path(source).name})
    report.raise_if_failed(f"safetensors file {output}")
    return report


def model_to_safetensors(model: nn.Module, output: str | Path, *, model_name: str = "") -> VerificationReport:
    """Writes a loaded model's weights, its adapter heads (``projectors.*``) included."""
    tensors = dict(model.state_dict())
    report = _save(tensors, output, {"eupe_model": model_name or type(model).__name__})
    report.raise_if_failed(f"safetensors file {output}")
    return report
