"""Charts drawn with matplotlib (the optional ``plot`` extra): titled, with labelled axes and readable ticks.

One module serves every chart of the project: training-loss curves, the demo's k-NN bars and ``eupe bench``'s
throughput bars. Each function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils.io import atomic_path
from ..utils.optional import require


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "Drawing charts")
    matplotlib.use("Agg")  # files only, never a window
    return require("matplotlib.pyplot", "Drawing charts")


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, *, title: str,
               xlabel: str, ylabel: str, log_y: bool = True, log_x: bool = False,
               bands: Mapping[str, Sequence[Sequence[float]]] | None = None, dashed: Sequence[str] = ()) -> Path:
    """Named ``(x, y)`` series as lines; y (x) on a log scale when asked and every value is positive.
    ``bands[name]`` shades a ``(low, high)`` interval per point of that series; ``dashed`` series are reference
    lines (drawn dashed, without markers)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.2))
    finite = [y for points in series.values() for _, y in points if math.isfinite(y)]
    for name, points in series.items():
        kept = [(x, y) for x, y in points if math.isfinite(y)]
        if not kept:
            continue
        reference = name in dashed
        (line,) = ax.plot(*zip(*kept), label=name, linewidth=1.0 if reference else 1.5,
                          linestyle="--" if reference else "-",
                          marker=None if reference or len(kept) >= 12 else "o")
        if bands and name in bands:
            xs = [x for x, _ in points]
            ax.fill_between(xs, [b[0] for b in bands[name]], [b[1] for b in bands[name]], color=line.get_color(),
                            alpha=0.15, linewidth=0)
    if log_y and finite and min(finite) > 0:
        ax.set_yscale("log")
    if log_x and all(x > 0 for points in series.values() for x, _ in points):
        ax.set_xscale("log")
        ticks = sorted({x for name, points in series.items() if name not in dashed for x, _ in points})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def bar_chart(values: Mapping[str, float], path: str | Path, *, title: str, xlabel: str,
              intervals: Mapping[str, tuple[float, float]] | None = None, x_max: float | None = None,
              digits: int = 1) -> Path:
    """Horizontal bars, one per name, labelled with their value; ``intervals`` draws (low, high) error bars."""
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.6))
    heights = [values[n] if math.isfinite(values[n]) else 0.0 for n in names]
    errors = None
    if intervals:
        errors = [[max(0.0, values[n] - intervals[n][0]) if n in intervals else 0.0 for n in names],
                  [max(0.0, intervals[n][1] - values[n]) if n in intervals else 0.0 for n in names]]
    bars = ax.barh(names, heights, xerr=errors, capsize=3, color=plt.cm.tab10.colors[: len(names)])
    ax.bar_label(bars, labels=[f"{values[n]:.{digits}f}" for n in names], padding=4, fontsize=9)
    ax.invert_yaxis()  # first name on top
    ax.set(title=title, xlabel=xlabel)
    if x_max is not None:
        ax.set_xlim(0, x_max)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def grouped_bar_chart(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], path: str | Path, *,
                      title: str, ylabel: str,
                      spreads: Mapping[str, Sequence[tuple[float, float] | None]] | None = None) -> Path:
    """Vertical bars: one group per label, one bar per series (``None``: no bar); optional (low, high) spreads."""
    plt = _pyplot()
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * n + 2), 4.8))
    for i, (name, heights) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        kept = [(x, h, (spreads or {}).get(name, [None] * len(groups))[g])
                for g, (x, h) in enumerate(zip(xs, heights)) if h is not None]
        if not kept:
            continue
        errors = [[h - s[0] if s else 0.0 for _, h, s in kept], [s[1] - h if s else 0.0 for _, h, s in kept]]
        ax.bar([x for x, _, _ in kept], [h for _, h, _ in kept], width * 0.95, label=name,
               yerr=errors if spreads else None, capsize=2)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
