"""Worker defaults follow the CPUs the process may use, for every command that starts workers."""

from __future__ import annotations

import os

import pytest

from eupe.eval.depth.protocol import DepthDataConfig
from eupe.eval.segmentation.protocol import SegDataConfig
from eupe.extract import ExtractConfig
from eupe.utils import workers


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_defaults_are_capped_by_the_cpus_of_the_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert workers.available_cpus() == 2
    assert ExtractConfig().num_workers == SegDataConfig().num_workers == DepthDataConfig().num_workers == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert ExtractConfig().num_workers == 4  # extract, knn, linear, zeroshot (their extract.num_workers)
    assert SegDataConfig().num_workers == DepthDataConfig().num_workers == 8
    assert ExtractConfig(num_workers=16).num_workers == 16  # an explicit value is kept
