"""Data loaders of the dense probes: a seeded, shuffled, endless training stream and in-order evaluation items."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tqdm import tqdm

from .seeding import seed_everything, seed_worker


def train_loader(
    dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, seed: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Shuffled, seeded training loader (global RNGs seeded, each worker reseeded from its torch seed)."""
    seed_everything(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
        num_workers=num_workers, generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0, pin_memory=device.type == "cuda",
    )


def cycle(loader: Iterable) -> Iterator:
    """Endless iteration over a loader, re-shuffling at every pass."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the training data loader yielded no batch (is the training split empty?)")


def evaluation_batches(dataset: torch.utils.data.Dataset, num_workers: int, desc: str) -> Iterable[Any]:
    """The evaluation items one at a time (batches of one, in order), with a progress bar."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=num_workers)
    return tqdm(loader, desc=desc, dynamic_ncols=True, mininterval=1.0)
