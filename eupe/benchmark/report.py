"""Benchmark output: a Markdown table, a CSV file and a PNG bar chart of throughput."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from ..utils.io import atomic_write_text
from ..viz.charts import grouped_bar_chart
from .runner import BenchResult

COLUMNS = ("model", "size", "batch", "backend", "median_ms", "p25_ms", "p75_ms", "images_per_s",
           "speedup_vs_eager", "peak_mem_mib", "peak_mem_note", "gflops_per_image", "rounds", "error")


def _speedup(result: BenchResult, results: Sequence[BenchResult]) -> float:
    eager = next((r for r in results if (r.model, r.size, r.batch, r.backend)
                  == (result.model, result.size, result.batch, "eager") and r.times_ms), None)
    return eager.median_ms / result.median_ms if eager and result.times_ms else float("nan")


def rows(results: Sequence[BenchResult]) -> list[dict]:
    """One flat dict per result, with the columns of :data:`COLUMNS`."""
    out = []
    for r in results:
        p25, p75 = r.spread_ms
        out.append(dict(model=r.model, size=r.size, batch=r.batch, backend=r.backend, median_ms=r.median_ms,
                        p25_ms=p25, p75_ms=p75, images_per_s=r.images_per_s, speedup_vs_eager=_speedup(r, results),
                        peak_mem_mib=r.peak_mem_mib, peak_mem_note=r.peak_mem_note,
                        gflops_per_image=r.gflops_per_image, rounds=len(r.times_ms), error=r.error))
    return out


def _fmt(value: object, digits: int = 1) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _fmt_mib(value: float, timed: bool) -> str:
    """Peak memory as the table shows it: ``n/a`` where it was not measured, ``<1`` rather than a rounded 0."""
    if math.isnan(value):
        return "n/a" if timed else "–"
    return "<1" if value < 1 else f"{value:.0f}"


def markdown_table(results: Sequence[BenchResult]) -> str:
    """One row per result; a backend that did not run, or whose peak memory is n/a, says why in the last column."""
    lines = ["| model | size | batch | backend | median ms (IQR) | img/s | vs eager | peak MiB | GFLOPs/img | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows(results):
        timing = "–" if row["error"] else f"{_fmt(row['median_ms'])} ({_fmt(row['p25_ms'])}–{_fmt(row['p75_ms'])})"
        speedup = "–" if row["error"] else f"{_fmt(row['speedup_vs_eager'], 2)}x"
        lines.append(f"| {row['model']} | {row['size']} | {row['batch']} | {row['backend']} | {timing} | "
                     f"{_fmt(row['images_per_s'])} | {speedup} | {_fmt_mib(row['peak_mem_mib'], not row['error'])} | "
                     f"{_fmt(row['gflops_per_image'], 2)} | {row['error'] or _peak_note(row)} |")
    return "\n".join(lines) + "\n"


def _peak_note(row: dict) -> str:
    return f"peak memory n/a: {row['peak_mem_note']}" if row["peak_mem_note"] else ""


def write_csv(results: Sequence[BenchResult], path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows(results))
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def draw_chart(results: Sequence[BenchResult], path: str | Path, *, title: str = "EUPE throughput") -> Path:
    """Grouped bars: one group per (model, size, batch), one bar per backend, height = images per second, with
    the interquartile range of the timed rounds as the spread (needs matplotlib: the ``plot`` extra)."""
    timed = [r for r in results if r.times_ms]
    groups = list(dict.fromkeys((r.model, r.size, r.batch) for r in timed))
    if not groups:
        raise ValueError("No backend produced timings; nothing to chart.")
    by_key = {(r.model, r.size, r.batch, r.backend): r for r in timed}
    backends = list(dict.fromkeys(r.backend for r in timed))
    series = {b: [by_key[(*g, b)].images_per_s if (*g, b) in by_key else None for g in groups] for b in backends}
    # images/s at the 75th and 25th percentile of the time per batch
    spreads = {b: [(1000.0 * g[2] / by_key[(*g, b)].spread_ms[1], 1000.0 * g[2] / by_key[(*g, b)].spread_ms[0])
                   if (*g, b) in by_key else None for g in groups] for b in backends}
    labels = [f"{model}\n{size} px, batch {batch}" for model, size, batch in groups]
    return grouped_bar_chart(labels, series, path, title=f"{title} (higher is better; bars: IQR of rounds)",
                             ylabel="images / s", spreads=spreads)
