"""The backbone every evaluation protocol takes: ``run_<protocol>(backbone, config, output_dir)``."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..extract import FeatureBackbone
from ..extract.provenance import backbone_identity, module_sha256


@dataclass(frozen=True)
class EvalBackbone(FeatureBackbone):
    """A :class:`~eupe.extract.FeatureBackbone` (lazy ``load``, ``device``, lazy ``identity``, ``autocast``) plus
    the short ``name`` that results, summaries and head files record.

    ``load`` is called only when a protocol needs the model, after its inputs are checked, so that a wrong path
    never costs a weights download; evaluations on feature folders never load it at all.
    """

    name: str = ""

    @classmethod
    def of(cls, module: nn.Module, *, name: str = "", device: torch.device | str | None = None,
           autocast: contextlib.AbstractContextManager | None = None) -> EvalBackbone:
        """An already loaded (frozen, eval-mode) ``module``; ``device`` defaults to that of its parameters, and its
        identity is ``name`` with the SHA-256 of its state (computed once, when first needed)."""
        where = torch.device(device) if device is not None else next(module.parameters()).device
        identity = functools.cache(lambda: backbone_identity(name, f"sha256:{module_sha256(module)}"))
        return cls(load=lambda: module, device=where, identity=identity, autocast=autocast, name=name)
