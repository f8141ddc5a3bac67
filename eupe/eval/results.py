"""What every evaluation leaves in ``--output-dir``: its resolved config, its results, and a one-line summary."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import save_config
from ..utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


def write_run_outputs(
    output_dir: str | Path,
    *,
    config: Any,
    results: Mapping[str, Any],
    summary: str,
    table: Sequence[Mapping[str, Any]] | None = None,
    name: str = "results",
) -> Path:
    """Writes ``config.yaml``, ``<name>.json`` (and ``<name>.csv`` from ``table`` rows) and prints ``summary``.

    Returns the output folder. All files are written atomically, so an interrupted run never leaves a
    half-written result next to a complete one.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    atomic_write_json(out / f"{name}.json", dict(results))
    if table:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0].keys()))
        writer.writeheader()
        writer.writerows(table)
        atomic_write_text(out / f"{name}.csv", buffer.getvalue())
    print(summary)
    logger.info("wrote %s", out)
    return out
