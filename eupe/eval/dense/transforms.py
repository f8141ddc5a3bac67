"""The image tensor every dense protocol feeds its backbone."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import Tensor

from ...data.transforms import normalize_imagenet, to_unit_tensor


def image_to_tensor(image: Image.Image | np.ndarray) -> Tensor:
    """RGB PIL image or ``HxWx3`` uint8 array -> ImageNet-normalised ``3 x H x W`` float tensor (no resizing)."""
    return normalize_imagenet(to_unit_tensor(image))
