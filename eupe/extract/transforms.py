"""Evaluation transforms for feature extraction: the reference kNN's resize + centre crop, or a square resize; and
the short-side resize with a bounded long side that every whole-image consumer (pictures, segmentation) uses."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from PIL import Image

from ..data.transforms import EvalTransform, resize_short_side

logger = logging.getLogger(__name__)

#: The reference kNN resizes the short side to 256 for a 224 crop; other resolutions keep that ratio.
CROP_RATIO = 224 / 256
RESIZE_MODES = ("crop", "square")
#: The most elongated image (long side / short side) that is resized by its short side as it is. Beyond it, the
#: resized image (and its tokens) would grow with the aspect ratio: a 3x100000 image at short side 256 is 8.5M
#: pixels long.
MAX_ASPECT = 8


def resize_short_side_bounded(image: Image.Image, short: int, *, resample: int = Image.BICUBIC,
                              multiple: int = 1, max_aspect: float = MAX_ASPECT, name: str = "an image"
                              ) -> Image.Image:
    """:func:`~eupe.data.transforms.resize_short_side`, with the long side bounded by ``max_aspect * short``: a more
    elongated image is scaled so that its long side is that bound (its short side ends shorter than ``short``,
    at least ``multiple``), and a note naming it (``name``) is logged. Memory and token counts stay bounded for
    any aspect ratio; other images are resized exactly as by ``resize_short_side``."""
    width, height = image.size
    if max(width, height) <= max_aspect * min(width, height):
        return resize_short_side(image, short, resample=resample, multiple=multiple)
    scale = max_aspect * short / max(width, height)
    size = tuple(max(multiple, round(side * scale / multiple) * multiple) for side in image.size)
    logger.warning("%s is %dx%d pixels (aspect ratio %.0f:1, above %g:1): resized to %dx%d, not to short side %d, "
                   "so that memory and tokens stay bounded", name, width, height,
                   max(width, height) / min(width, height), max_aspect, size[0], size[1], short)
    return image.resize(size, resample)


class ResizeCenterCrop:
    """PIL image -> short side resized (bicubic) to ``resize_size``, centre ``crop_size`` crop, normalised tensor.

    An image more elongated than :data:`MAX_ASPECT` is not resized whole: only the region of the crop is resampled
    (PIL's ``box``), the same crop up to rounding, so that its cost does not grow with the aspect ratio.
    """

    def __init__(self, resize_size: int, crop_size: int) -> None:
        if crop_size > resize_size:
            raise ValueError(f"Crop size {crop_size} is larger than the resize size {resize_size}")
        self.resize_size = resize_size
        self.crop_size = crop_size
        self.to_tensor = EvalTransform(crop_size)  # a no-op resize at this size: only converts and normalises

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        if max(width, height) > MAX_ASPECT * min(width, height):
            return self.to_tensor(self._resampled_crop(image))
        image = resize_short_side(image, self.resize_size)
        left = (image.width - self.crop_size) // 2
        top = (image.height - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return self.to_tensor(image)

    def _resampled_crop(self, image: Image.Image) -> Image.Image:
        """The centre crop of the resized image, resampling only the source region it covers."""
        scale = self.resize_size / min(image.size)
        resized = [max(1, round(side * scale)) for side in image.size]
        left, top = ((side - self.crop_size) // 2 for side in resized)
        sx, sy = (side / new for side, new in zip(image.size, resized))
        box = (left * sx, top * sy, (left + self.crop_size) * sx, (top + self.crop_size) * sy)
        return image.resize((self.crop_size, self.crop_size), Image.BICUBIC, box=box)

    def __repr__(self) -> str:
        return (f"ResizeCenterCrop(resize_size={self.resize_size}, crop_size={self.crop_size}, resample=bicubic, "
                f"then {self.to_tensor!r})")


def make_eval_transform(resolution: int = 224, mode: str = "crop") -> Callable[[Image.Image], torch.Tensor]:
    """``crop``: short side to ``resolution / CROP_RATIO`` then centre crop (reference kNN); ``square``: resize."""
    if mode == "crop":
        return ResizeCenterCrop(round(resolution / CROP_RATIO), resolution)
    if mode == "square":
        return EvalTransform(resolution)
    raise ValueError(f"Unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
