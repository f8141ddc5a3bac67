"""Benchmark output: a Markdown table, a CSV file and a PNG bar chart of throughput (drawn with PIL)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..utils.io import atomic_path, atomic_write_text
from .runner import BenchResult

COLUMNS = ("model", "size", "batch", "backend", "median_ms", "p25_ms", "p75_ms", "images_per_s",
           "speedup_vs_eager", "peak_mem_mib", "gflops_per_image", "rounds", "error")
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974")


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
                        peak_mem_mib=r.peak_mem_mib, gflops_per_image=r.gflops_per_image, rounds=len(r.times_ms),
                        error=r.error))
    return out


def _fmt(value: object, digits: int = 1) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: Sequence[BenchResult]) -> str:
    lines = ["| model | size | batch | backend | median ms (IQR) | img/s | vs eager | peak MiB | GFLOPs/img |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows(results):
        if row["error"]:
            timing = f"n/a: {row['error']}"
        else:
            timing = f"{_fmt(row['median_ms'])} ({_fmt(row['p25_ms'])}–{_fmt(row['p75_ms'])})"
        lines.append(f"| {row['model']} | {row['size']} | {row['batch']} | {row['backend']} | {timing} | "
                     f"{_fmt(row['images_per_s'])} | {_fmt(row['speedup_vs_eager'], 2)}x | "
                     f"{_fmt(row['peak_mem_mib'], 0)} | {_fmt(row['gflops_per_image'], 2)} |")
    return "\n".join(lines) + "\n"


def write_csv(results: Sequence[BenchResult], path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows(results))
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def draw_chart(results: Sequence[BenchResult], path: str | Path, *, title: str = "EUPE throughput") -> Path:
    """Grouped bars: one group per (model, size, batch), one bar per backend, height = images per second."""
    timed = [r for r in results if r.times_ms]
    groups = list(dict.fromkeys((r.model, r.size, r.batch) for r in timed))
    backends = list(dict.fromkeys(r.backend for r in timed))
    if not groups:
        raise ValueError("No backend produced timings; nothing to chart.")
    value = {(r.model, r.size, r.batch, r.backend): r.images_per_s for r in timed}
    top = max(value.values()) * 1.15
    bar_w, gap, left, bottom, height = 26, 30, 70, 110, 360
    width = left + len(groups) * (len(backends) * bar_w + gap) + 180
    image = Image.new("RGB", (width, height + bottom + 40), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    y0 = 40 + height
    draw.text((left, 10), f"{title} (images/s, higher is better)", fill="black", font=font)
    draw.line((left, 40, left, y0), fill="black")
    draw.line((left, y0, width - 170, y0), fill="black")
    for i in range(5):
        v = top * i / 4
        y = y0 - height * i / 4
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((5, y - 6), f"{v:.0f}", fill="black", font=font)
    for g, key in enumerate(groups):
        gx = left + gap // 2 + g * (len(backends) * bar_w + gap)
        for b, backend in enumerate(backends):
            v = value.get((*key, backend))
            if v is None:
                continue
            x = gx + b * bar_w
            draw.rectangle((x, y0 - height * v / top, x + bar_w - 4, y0), fill=PALETTE[b % len(PALETTE)])
        label = f"{key[0]}\n{key[1]}px b{key[2]}"
        draw.multiline_text((gx, y0 + 8), label, fill="black", font=font)
    for b, backend in enumerate(backends):
        ly = 50 + 18 * b
        draw.rectangle((width - 160, ly, width - 148, ly + 12), fill=PALETTE[b % len(PALETTE)])
        draw.text((width - 142, ly), backend, fill="black", font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
