"""The backbone every evaluation protocol takes: ``run_<protocol>(backbone, config, output_dir)``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..extract import FeatureBackbone


@dataclass(frozen=True)
class EvalBackbone(FeatureBackbone):
    """A :class:`~eupe.extract.FeatureBackbone` (lazy ``load``, ``device``, ``model_id``, ``autocast``) plus the
    short ``name`` that results, summaries and head files record.

    ``load`` is called only when a protocol needs the model, after its inputs are checked, so that a wrong path
    never costs a weights download; evaluations on feature folders never load it at all.
    """

    name: str = ""

    @classmethod
    def of(cls, module: nn.Module, *, name: str = "", device: torch.device | str | None = None,
           autocast: contextlib.AbstractContextManager | None = None) -> EvalBackbone:
        """An already loaded (frozen, eval-mode) ``module``; ``device`` defaults to that of its parameters and
        ``name`` doubles as its ``model_id``."""
        where = torch.device(device) if device is not None else next(module.parameters()).device
        return cls(load=lambda: module, device=where, model_id=name, autocast=autocast, name=name)
