"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Downloads and checkpoint digests go to a temporary cache, never the user's ~/.cache/eupe."""
    patch = pytest.MonkeyPatch()
    patch.setenv("EUPE_CACHE", str(tmp_path_factory.mktemp("eupe_cache")))
    yield
    patch.undo()


@pytest.fixture
def one_thread():
    """One intra-op thread: the kernels of subprocess runs (which use one) for bit-exact comparisons, and much faster
    on a shared, oversubscribed 2-core CPU (OpenMP's thread sync dominates small ops)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
