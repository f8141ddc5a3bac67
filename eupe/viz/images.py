"""Preparing input pictures for the backbone, naming them in titles and notes, and writing output pictures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..eval.dense import image_to_tensor
from ..utils.io import atomic_path


def to_batch(images: list[Image.Image], device: torch.device | str = "cpu") -> torch.Tensor:
    """Same-size RGB images -> a normalised ``[B, 3, H, W]`` batch."""
    return torch.stack([image_to_tensor(image) for image in images]).to(device)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Writes ``image`` as a PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def picture_name(names: Sequence[str] | None, index: int) -> str:
    """How notes about the ``index``-th input picture name it."""
    return names[index] if names is not None else f"image {index}"


def picture_title(what: str, backbone: nn.Module, model_label: str | None, name: str, image: Image.Image) -> str:
    """Two title lines of a picture: ``what`` it shows and of which backbone (``model_label``, e.g. model name and
    weights; default: the backbone's class name), then the input's file name and the size it was run at."""
    return (f"{what}: {model_label or type(backbone).__name__}\n"
            f"{Path(name).name}, run at {image.width}x{image.height} px")
