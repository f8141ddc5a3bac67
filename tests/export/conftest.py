"""Fixtures for the export tests: small models whose outputs depend on the input like a trained model's."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_vit


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights give nearly input-independent class tokens (LayerScale 1e-5 mutes every block); scaling
    LayerScale to 1 and perturbing all weights makes parity and int8 checks meaningful."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
            elif p.ndim > 1:
                p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@pytest.fixture
def vit() -> torch.nn.Module:
    return trained_like(tiny_vit())
