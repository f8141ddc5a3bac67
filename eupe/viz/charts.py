"""Charts drawn with matplotlib (the optional ``plot`` extra): titled, with labelled axes and readable ticks.

One module serves every chart of the project: training-loss curves, the demo's k-NN bars and ``eupe bench``'s
throughput bars (each function writes a PNG atomically and returns its path), and the titled panel figures of
``eupe visualize`` (PCA, segmentation and depth pictures: :func:`panel_figure`, rendered by :func:`figure_image`).
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from ..utils.io import atomic_path
from ..utils.optional import require

#: Resolution of the panel figures: at 100 dots per inch a figure's inches are hundreds of pixels.
PICTURE_DPI = 100


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


@dataclass(frozen=True)
class Panel:
    """One picture of a :func:`panel_figure`: an RGB image shown as it is, or a 2-D map of values drawn with
    ``cmap`` over ``value_range`` and explained by a colour bar labelled ``colour_bar`` (quantity and unit).
    ``legend`` entries (label, RGB colour 0..255) are listed beside the panel under ``legend_title``."""

    image: np.ndarray | Image.Image
    title: str = ""
    cmap: str = "viridis"
    value_range: tuple[float, float] | None = None
    colour_bar: str | None = None
    legend: Sequence[tuple[str, Sequence[int]]] = ()
    legend_title: str = ""


#: Layout of the panel figures, in inches: the gap between panels and around the figure, the room a colour bar
#: takes beside (ticks and label included) or below a panel, and the width of a legend beside one.
_GAP, _BAR_BESIDE, _BAR_BELOW, _LEGEND_BESIDE = 0.25, 1.2, 0.9, 2.6
#: Columns of a legend below a panel (stacked panels are wide).
LEGEND_COLUMNS = 3


def _panel_inches(height: int, width: int) -> tuple[float, float]:
    """Display size of a panel: its long side 4.5 to 6 inches (small inputs enlarged so titles fit, large ones
    reduced), the aspect ratio kept."""
    long_side = min(max(max(height, width) / PICTURE_DPI, 4.5), 6.0)
    scale = long_side / max(height, width)
    return height * scale, width * scale


def _text_inches(text: str, fontsize: float) -> float:
    """Height of ``text``'s lines at ``fontsize`` points (1.2 line spacing)."""
    return (text.count("\n") + 1) * fontsize * 1.2 / 72 if text else 0.0


def _chars(inches: float, fontsize: float) -> int:
    """About how many characters of ``fontsize`` points fit on a line ``inches`` wide (DejaVu Sans: ~0.5 em)."""
    return max(20, int(inches * 72 / (0.5 * fontsize)))


def _wrapped(text: str, chars: int) -> str:
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())


def _legend_inches(panel: Panel, columns: int) -> float:
    """Height of ``panel``'s legend (0 without one) in ``columns`` columns: rows of 9-point labels, its title."""
    if not panel.legend:
        return 0.0
    return -(-len(panel.legend) // columns) * 0.21 + _text_inches(panel.legend_title, 9) + 0.15


def panel_figure(panels: Sequence[Panel], *, title: str) -> Any:
    """A matplotlib figure of equal-size ``panels`` under ``title``: side by side, or one above the other for
    images much wider than tall, each with its title and its colour bar and legend (beside it, or below it when
    stacked); the caller renders or saves it.

    Every part is placed at a computed position (in inches: pictures at their aspect ratio, text by its number of
    lines), so that nothing overlaps and no blank strip separates the panels whatever the shape of the input."""
    plt = _pyplot()
    height, width = np.asarray(panels[0].image).shape[:2]
    panel_h, panel_w = _panel_inches(height, width)
    stacked = width > 1.5 * height
    titles = [_wrapped(p.title, _chars(panel_w, 10)) for p in panels]
    title_h = max(_text_inches(t, 10) for t in titles) + 0.1  # one band for all, so that the pictures align
    if stacked:  # a column: each panel's title, picture, colour bar and legend below one another
        below = [_BAR_BELOW * (p.colour_bar is not None) + _legend_inches(p, LEGEND_COLUMNS) for p in panels]
        fig_w = panel_w + 2 * _GAP
        body_h = sum(title_h + panel_h + b for b in below) + _GAP * len(panels)
    else:  # a row: each panel's colour bar and legend at its right
        beside = [_BAR_BESIDE * (p.colour_bar is not None) + _LEGEND_BESIDE * bool(p.legend) for p in panels]
        fig_w = sum(panel_w + b for b in beside) + _GAP * (len(panels) + 1)
        body_h = title_h + max(panel_h, *(_legend_inches(p, 1) for p in panels)) + _GAP
    suptitle = _wrapped(title, _chars(fig_w, 11))
    fig_h = body_h + _text_inches(suptitle, 11) + 0.1
    fig = plt.figure(figsize=(fig_w, fig_h))
    fig.suptitle(suptitle, fontsize=11, y=1 - 0.1 / fig_h, va="top")
    x, top = _GAP, fig_h - _text_inches(suptitle, 11) - 0.1  # where the next panel's title band starts
    for panel, panel_title in zip(panels, titles):
        box = (x, top - title_h - panel_h, panel_w, panel_h)
        ax = fig.add_axes([box[0] / fig_w, box[1] / fig_h, panel_w / fig_w, panel_h / fig_h])
        _draw_panel(fig, ax, panel, panel_title, box, stacked)
        if stacked:
            top -= title_h + panel_h + _GAP + _BAR_BELOW * (panel.colour_bar is not None) \
                + _legend_inches(panel, LEGEND_COLUMNS)
        else:
            x += panel_w + _GAP + _BAR_BESIDE * (panel.colour_bar is not None) + _LEGEND_BESIDE * bool(panel.legend)
    return fig


def _draw_panel(fig: Any, ax: Any, panel: Panel, title: str, box: tuple[float, float, float, float],
                below: bool) -> None:
    """One panel at ``box`` (x, y, width, height in inches) in a thin grey frame (white pictures stay visible on
    the white figure); its colour bar and legend ``below`` it, else at its right."""
    values = np.asarray(panel.image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color="0.6", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    if values.ndim == 3:
        ax.imshow(values, interpolation="nearest", aspect="auto")  # the box has the picture's aspect ratio
    else:
        low, high = panel.value_range or (float(np.nanmin(values)), float(np.nanmax(values)))
        drawn = ax.imshow(values, cmap=panel.cmap, vmin=low, vmax=high, interpolation="nearest", aspect="auto")
        if panel.colour_bar is not None:
            _colour_bar(fig, drawn, panel, values, box, below)
    if panel.legend:
        patches = require("matplotlib.patches", "Drawing legends")
        handles = [patches.Patch(facecolor=np.asarray(colour) / 255, edgecolor="black", linewidth=0.5, label=label)
                   for label, colour in panel.legend]
        placement = dict(loc="upper center", ncols=LEGEND_COLUMNS,
                         bbox_to_anchor=(0.5, -(_BAR_BELOW * (panel.colour_bar is not None) + 0.05) / box[3])) \
            if below else dict(loc="upper left", bbox_to_anchor=(1 + (_BAR_BESIDE * (panel.colour_bar is not None)
                                                                     + 0.1) / box[2], 1.0))
        ax.legend(handles=handles, title=panel.legend_title, borderaxespad=0.0, fontsize=9, title_fontsize=9,
                  frameon=False, **placement)


def _colour_bar(fig: Any, drawn: Any, panel: Panel, values: np.ndarray, box: tuple[float, float, float, float],
                below: bool) -> None:
    """The colour bar of a map of values, beside or below its panel; its ends are arrows where values were
    clipped to the colour range."""
    low, high = drawn.get_clim()
    clipped = bool((values < low).any()), bool((values > high).any())
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(clipped, "neither")
    fig_w, fig_h = fig.get_size_inches()
    x, y, w, h = box
    bar = (x + 0.1 * w, y - 0.3, 0.8 * w, 0.15) if below else (x + w + 0.15, y + 0.05 * h, 0.15, 0.9 * h)
    cax = fig.add_axes([bar[0] / fig_w, bar[1] / fig_h, bar[2] / fig_w, bar[3] / fig_h])
    colour_bar = fig.colorbar(drawn, cax=cax, orientation="horizontal" if below else "vertical", extend=extend)
    colour_bar.set_label(panel.colour_bar, fontsize=10)
    colour_bar.ax.tick_params(labelsize=9)


def figure_image(fig: Any) -> Image.Image:
    """``fig`` rendered as an RGB picture (cropped to what it draws, legends beside the panels included), then
    closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PICTURE_DPI, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as picture:
        return picture.convert("RGB")
