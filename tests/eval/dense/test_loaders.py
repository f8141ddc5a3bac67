"""Seeded training loaders and the endless training stream."""

from __future__ import annotations

import random

import pytest
import torch

from eupe.eval.dense.loaders import cycle, train_loader


def test_train_loader_order_and_global_rngs_follow_the_seed():
    data = list(range(10))

    def run(seed):
        loader = train_loader(data, 3, 0, seed, torch.device("cpu"))
        return [b.tolist() for b in loader], random.random(), torch.rand(1).item()

    assert run(5) == run(5) and run(5) != run(6)
    batches, _, _ = run(5)
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)  # the incomplete last batch is dropped


def test_cycle_reshuffles_and_fails_on_an_empty_loader():
    stream = cycle(train_loader(list(range(4)), 2, 0, 0, torch.device("cpu")))
    seen = [next(stream).tolist() for _ in range(6)]
    assert sorted(x for b in seen[:2] for x in b) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="yielded no batch"):
        next(cycle([]))
