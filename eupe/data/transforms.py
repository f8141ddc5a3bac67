"""The model card's evaluation transform without torchvision: square resize, [0, 1] floats, ImageNet mean/std."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..constants import IMAGENET_MEAN, IMAGENET_STD


def to_unit_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB PIL image or ``HxWx3`` uint8 array -> ``3 x H x W`` float tensor in [0, 1]; a ``C x H x W`` tensor is
    returned as float, scaled by 1/255 if it is uint8 (no resizing in any case)."""
    if isinstance(image, torch.Tensor):
        return image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)


def resize_short_side(image: Image.Image, short: int, *, resample: int = Image.BICUBIC,
                      multiple: int = 1) -> Image.Image:
    """Resizes ``image`` so its shorter side is ``short`` pixels, keeping the aspect ratio; with ``multiple``, both
    sides are rounded to multiples of it (a ViT's patch size, so every pixel is covered by a token)."""
    scale = short / min(image.size)
    size = tuple(max(multiple, round(side * scale / multiple) * multiple) for side in image.size)
    return image.resize(size, resample)


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with the ImageNet constants, for ``[..., 3, H, W]`` tensors in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


class EvalTransform:
    """Callable: PIL image, ``HxWxC`` uint8 array or ``CxHxW`` tensor -> normalised ``3 x S x S`` float tensor.

    PIL inputs are resized with PIL's bilinear filter (what torchvision's ``Resize(antialias=True)`` does for PIL
    images); tensors with antialiased bilinear interpolation. Non-RGB images are converted to RGB first.
    """

    def __init__(
        self,
        resize_size: int | tuple[int, int] = 256,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = (resize_size, resize_size) if isinstance(resize_size, int) else tuple(resize_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            rgb = image if image.mode == "RGB" else image.convert("RGB")  # before resizing, as palette images need
            x = to_unit_tensor(rgb.resize((self.size[1], self.size[0]), Image.BILINEAR))
        else:
            x = F.interpolate(to_unit_tensor(image)[None], size=self.size, mode="bilinear", antialias=True,
                              align_corners=False)[0]
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return f"EvalTransform(size={self.size}, mean={mean}, std={std})"


def make_transform(resize_size: int = 256) -> EvalTransform:
    """The transform of the EUPE model card (``resize_size`` x ``resize_size``, ImageNet normalisation)."""
    return EvalTransform(resize_size)
