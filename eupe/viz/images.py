"""Preparing input pictures for the backbone and writing output pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..eval.dense import image_to_tensor
from ..utils.io import atomic_path


def to_batch(images: list[Image.Image], device: torch.device | str = "cpu") -> torch.Tensor:
    """Same-size RGB images -> a normalised ``[B, 3, H, W]`` batch."""
    return torch.stack([image_to_tensor(image) for image in images]).to(device)


def side_by_side(*panels: Image.Image | np.ndarray, gap: int = 4) -> Image.Image:
    """Panels of equal height placed left to right on a white background."""
    pictures = [p if isinstance(p, Image.Image) else Image.fromarray(p) for p in panels]
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1), height), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture.convert("RGB"), (x, 0))
        x += picture.width + gap
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Writes ``image`` as a PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
