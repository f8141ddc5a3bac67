"""Dependency-free charts with PIL (used when matplotlib is missing, so the PNGs always exist)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def draw_curves(series: dict[str, list[tuple[float, float]]], path: str | Path, *, title: str = "",
                size: tuple[int, int] = (900, 560), log_y: bool = True) -> Path:
    """Line chart of named ``(x, y)`` series with a legend; y on a log scale when all values are positive."""
    width, height = size
    left, right, top, bottom = 70, 230, 40, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    log_y = log_y and bool(points) and all(p[1] > 0 for p in points)
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    if points:
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(fy(p[1]) for p in points), max(fy(p[1]) for p in points)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

        def to_px(x: float, y: float) -> tuple[float, float]:
            return (left + (x - x0) / (x1 - x0) * (width - left - right),
                    height - bottom - (fy(y) - y0) / (y1 - y0) * (height - top - bottom))

        for i, (name, pts) in enumerate(series.items()):
            color = PALETTE[i % len(PALETTE)]
            px = [to_px(x, y) for x, y in pts if math.isfinite(y)]
            if len(px) > 1:
                draw.line(px, fill=color, width=2)
            draw.rectangle([width - right + 10, top + 18 * i, width - right + 22, top + 18 * i + 12], fill=color)
            draw.text((width - right + 28, top + 18 * i), name, fill="black")
        for frac in (0, 0.5, 1):
            y = y0 + frac * (y1 - y0)
            label = f"{10 ** y:.3g}" if log_y else f"{y:.3g}"
            draw.text((5, height - bottom - frac * (height - top - bottom) - 6), label, fill="black")
        draw.text((left, height - bottom + 8), f"{x0:g}", fill="black")
        draw.text((width - right - 40, height - bottom + 8), f"{x1:g}", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 12), title + (" (log y)" if log_y else ""), fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def draw_bars(values: dict[str, float], path: str | Path, *, title: str = "", size: tuple[int, int] = (900, 480),
              y_max: float | None = None) -> Path:
    """Horizontal bar chart of named values (e.g. k-NN top-1 per model)."""
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, right, top = 220, 80, 40
    top_value = y_max or max([v for v in values.values() if math.isfinite(v)] + [1e-9])
    row = (height - top - 20) / max(1, len(values))
    for i, (name, value) in enumerate(values.items()):
        y = top + i * row
        length = 0 if not math.isfinite(value) else value / top_value * (width - left - right)
        draw.rectangle([left, y + 4, left + length, y + row - 4], fill=PALETTE[i % len(PALETTE)])
        draw.text((10, y + row / 2 - 6), name, fill="black")
        draw.text((left + length + 6, y + row / 2 - 6), f"{value:.3f}", fill="black")
    draw.text((10, 12), title, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
