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
