"""Run visibility: per-step metrics as JSON lines, optional TensorBoard scalars, and the loss-curve PNG.

The JSONL file is the source of truth: on resume, lines after the resumed step are dropped (a killed run may have
logged steps past its last checkpoint), so a resumed run's log equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..viz.charts import line_chart

logger = logging.getLogger(__name__)
_warned_tensorboard = False


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return rows


class MetricsLogger:
    """Appends ``{"step": ..., metrics}`` lines (main rank only) and mirrors them to TensorBoard if installed."""

    def __init__(self, folder: str | Path, *, start_step: int, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(folder) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("step", -1) < start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")
        if tensorboard:
            self._tb = _summary_writer(Path(folder) / "tensorboard")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def _summary_writer(folder: Path):
    global _warned_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned_tensorboard:
            logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only (pip install tensorboard)")
            _warned_tensorboard = True
        return None
    return SummaryWriter(str(folder))


def plot_losses(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """PNG of every ``loss/<teacher>/<cls|patch>`` curve and the total (needs matplotlib: the ``plot`` extra)."""
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in sorted({k for r in rows for k in r})
              if k.startswith("loss")}
    return line_chart(series, path, title="Distillation losses per teacher and token type", xlabel="step",
                      ylabel="loss (log scale)")
