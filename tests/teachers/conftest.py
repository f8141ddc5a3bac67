"""Teacher tests compare against fp32 computations, so bf16 autocast is off unless a test turns it on."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fp32_teachers(monkeypatch):
    monkeypatch.setattr("eupe.teachers.base.fast_bf16", lambda device: False)
