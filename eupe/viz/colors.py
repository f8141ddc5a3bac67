"""Colours for pictures: a class palette and a depth colour map (numpy only)."""

from __future__ import annotations

import colorsys

import numpy as np

# Anchor colours of a dark-to-bright perceptual ramp (viridis' key points), interpolated linearly.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours, well spread in hue (golden-ratio steps) and stable across runs."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        colours.append(colorsys.hsv_to_rgb(hue, 0.65 + 0.3 * ((i // 2) % 2), value))
    return (np.asarray(colours).reshape(-1, 3) * 255).round().astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> ``[..., 3]`` uint8 colours of the ramp (dark = 0, bright = 1)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.minimum(v.astype(int), len(_RAMP) - 2)
    frac = (v - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def colorize_depth(depth: np.ndarray, min_depth: float | None = None, max_depth: float | None = None) -> np.ndarray:
    """Depth map -> RGB, near = bright, far = dark; the range defaults to the map's 2nd-98th percentiles."""
    depth = np.asarray(depth, dtype=np.float64)
    lo = np.percentile(depth, 2) if min_depth is None else min_depth
    hi = np.percentile(depth, 98) if max_depth is None else max_depth
    return colormap(1.0 - (depth - lo) / max(hi - lo, 1e-12))
