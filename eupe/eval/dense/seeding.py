"""Seeding of the global RNGs the dense training uses (Python's for augmentations, NumPy's, torch's)."""

from __future__ import annotations

import random

import numpy as np
import torch


def _seed_host(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's (modulo 2**32) and torch's global RNGs, so a run depends on ``seed`` only."""
    _seed_host(seed)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: seeds a worker's Python and NumPy RNGs from its torch seed (which the
    loader derives from its generator), so augmentations differ between workers but repeat between runs."""
    _seed_host(torch.initial_seed() % 2**32)
