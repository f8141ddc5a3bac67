"""Helpers shared by the tests: reference data and tiny models."""

from __future__ import annotations

from pathlib import Path

import torch

DATA_DIR = Path(__file__).parent / "data"
REFERENCE_DIR = DATA_DIR / "reference"
REPO_ROOT = Path(__file__).resolve().parents[1]
def load_reference(name: str) -> dict:
    """A miniature reference model: ``architecture`` kwargs, ``state_dict`` and ``cases`` with reference outputs."""
    return torch.load(REFERENCE_DIR / name, weights_only=True)


def tiny_vit(**overrides):
    from eupe.models import VisionTransformer

    arch = dict(embed_dim=64, depth=2, num_heads=2, n_storage_tokens=4, mask_k_bias=True, layerscale_init=1e-5,
                norm_layer="layernormbf16", pos_embed_rope_rescale_coords=2.0)
    arch.update(overrides)
    return VisionTransformer(**arch)
