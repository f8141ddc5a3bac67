"""Logging helpers."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet(level: int = logging.INFO) -> Iterator[None]:
    """Drops log records at ``level`` and below while the block runs (third-party tools that log every step)."""
    previous = logging.root.manager.disable
    logging.disable(max(level, previous))  # nested blocks never let through what an outer one drops
    try:
        yield
    finally:
        logging.disable(previous)
