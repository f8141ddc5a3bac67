"""Evaluation transforms for feature extraction: the reference kNN's resize + centre crop, or a square resize."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

from ..data.transforms import EvalTransform, resize_short_side

#: The reference kNN resizes the short side to 256 for a 224 crop; other resolutions keep that ratio.
CROP_RATIO = 224 / 256
RESIZE_MODES = ("crop", "square")


class ResizeCenterCrop:
    """PIL image -> short side resized (bicubic) to ``resize_size``, centre ``crop_size`` crop, normalised tensor."""

    def __init__(self, resize_size: int, crop_size: int) -> None:
        if crop_size > resize_size:
            raise ValueError(f"Crop size {crop_size} is larger than the resize size {resize_size}")
        self.resize_size = resize_size
        self.crop_size = crop_size
        self.to_tensor = EvalTransform(crop_size)  # a no-op resize at this size: only converts and normalises

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = resize_short_side(image, self.resize_size)
        left = (image.width - self.crop_size) // 2
        top = (image.height - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return self.to_tensor(image)

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(resize_size={self.resize_size}, crop_size={self.crop_size})"


def make_eval_transform(resolution: int = 224, mode: str = "crop") -> Callable[[Image.Image], torch.Tensor]:
    """``crop``: short side to ``resolution / CROP_RATIO`` then centre crop (reference kNN); ``square``: resize."""
    if mode == "crop":
        return ResizeCenterCrop(round(resolution / CROP_RATIO), resolution)
    if mode == "square":
        return EvalTransform(resolution)
    raise ValueError(f"Unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
