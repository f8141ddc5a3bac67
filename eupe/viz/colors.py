"""Colours of segmentation classes in pictures (numpy only)."""

from __future__ import annotations

import colorsys

import numpy as np


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours, well spread in hue (golden-ratio steps) and stable across runs."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        colours.append(colorsys.hsv_to_rgb(hue, 0.65 + 0.3 * ((i // 2) % 2), value))
    return (np.asarray(colours).reshape(-1, 3) * 255).round().astype(np.uint8)
