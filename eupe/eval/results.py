"""What every evaluation leaves in ``--output-dir``: its resolved config, its results, and a one-line summary."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import save_config
from ..loading import non_finite_keys
from ..utils.io import atomic_write_text

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

    Returns the output folder. ``<name>.json`` is strict JSON: a NaN or infinite value in ``results`` or
    ``table`` (a metric without anything to measure, a diverged head) is a ``ValueError`` naming where it is,
    and nothing is written. All files are written atomically, so an interrupted run never leaves a half-written
    result next to a complete one.
    """
    out = Path(output_dir)
    require_finite_values({name: results, "table": list(table or [])}, f"the {name} of the run into {out}")
    text = json.dumps(dict(results), indent=2, allow_nan=False) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    atomic_write_text(out / f"{name}.json", text)
    if table:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0].keys()))
        writer.writeheader()
        writer.writerows(table)
        atomic_write_text(out / f"{name}.csv", buffer.getvalue())
    print(summary)
    logger.info("wrote %s", out)
    return out


def require_finite_values(data: Any, what: str) -> None:
    """Raises ``ValueError`` naming the keys of the NaN and infinite numbers in ``data`` (nested mappings/lists)."""
    bad = non_finite_keys(data)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{what} hold non-finite values (NaN or infinity) at {shown}: a metric without any sample "
                         "to measure it, or a diverged model; nothing was written")
