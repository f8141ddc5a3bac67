"""How many worker processes to start by default: no more than the CPUs this process may run on.

A default of 8 decoding workers on a 2-core machine only makes the workers compete for the cores (and PyTorch warns
about it), so every ``num_workers`` default of the project is :func:`default_workers` of its upper bound, declared
with :func:`workers_field`, and ``--help`` says so (:data:`DEFAULT_NOTE` in the field's metadata).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

#: Metadata key of a dataclass field whose ``--help`` explains its default in words (read by the CLI).
DEFAULT_NOTE = "default_note"


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux; containers and
    ``taskset`` narrow it), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_workers(upper: int) -> int:
    """``upper`` worker processes, or fewer on a machine with fewer CPUs."""
    return max(0, min(upper, available_cpus()))


def workers_field(upper: int) -> Any:
    """A dataclass field defaulting to :func:`default_workers` of ``upper``, evaluated when the config is made, with
    the note ``--help`` prints beside the value."""
    return dataclasses.field(default_factory=functools.partial(default_workers, upper),
                             metadata={DEFAULT_NOTE: f"the CPUs this process may use, at most {upper}"})
