"""Image/label transforms of the ADE20K linear protocol: random rescale + crop + flip for training, short-side
resize for evaluation (labels stay at their original size; predictions are resized to them)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ...extract.transforms import resize_short_side_bounded
from ..dense.transforms import image_to_tensor
from .data import IGNORE_INDEX


def photometric_distortion(image: np.ndarray, brightness: float = 32, contrast: tuple[float, float] = (0.5, 1.5),
                           saturation: tuple[float, float] = (0.5, 1.5), hue: float = 18) -> np.ndarray:
    """mmsegmentation's PhotoMetricDistortion on an ``HxWx3`` uint8 image: each of brightness shift, contrast,
    saturation and hue shift applied with probability 1/2, contrast randomly before or after the colour changes.
    ``hue`` is in OpenCV's 0-180 scale, as in mmsegmentation."""
    x = image.astype(np.float32)

    def clip(v: np.ndarray) -> np.ndarray:
        return np.clip(v, 0, 255)

    def maybe_contrast(v: np.ndarray) -> np.ndarray:
        return clip(v * random.uniform(*contrast)) if random.random() < 0.5 else v

    if random.random() < 0.5:
        x = clip(x + random.uniform(-brightness, brightness))
    contrast_first = random.random() < 0.5
    if contrast_first:
        x = maybe_contrast(x)
    change_saturation, change_hue = random.random() < 0.5, random.random() < 0.5
    if change_saturation or change_hue:
        hsv = np.asarray(Image.fromarray(x.round().astype(np.uint8)).convert("HSV")).astype(np.float32)
        if change_saturation:
            hsv[..., 1] = clip(hsv[..., 1] * random.uniform(*saturation))
        if change_hue:
            hsv[..., 0] = hsv[..., 0] + random.uniform(-hue, hue) * 256 / 180  # PIL's hue spans 0-255
        hsv = (np.round(hsv) % 256).astype(np.uint8)
        x = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first:
        x = maybe_contrast(x)
    return x.round().astype(np.uint8)


@dataclass
class TrainAugment:
    """Random short-side rescale (``img_size`` x U(scale_range), long side bounded), random crop (retried while one
    class covers more than ``cat_max_ratio`` of it), horizontal flip, photometric distortion, normalisation, then
    padding to the crop size (image 0 after normalisation, label 255), in the reference's order."""

    img_size: int
    crop_size: int
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    cat_max_ratio: float = 0.75
    photometric: bool = True
    crop_tries: int = 10

    def __call__(self, image: Image.Image, label: np.ndarray) -> tuple[Tensor, Tensor]:
        short = round(self.img_size * random.uniform(*self.scale_range))
        image = resize_short_side_bounded(image, short, resample=Image.BILINEAR, name="a training image")
        label = np.asarray(Image.fromarray(label).resize(image.size, Image.NEAREST))
        array = np.asarray(image)
        array, label = self._crop(array, label)
        if random.random() < self.flip_prob:
            array, label = array[:, ::-1], label[:, ::-1]
        if self.photometric:
            array = photometric_distortion(np.ascontiguousarray(array))
        return self._pad(image_to_tensor(array), torch.from_numpy(label.astype(np.int64)))

    def _crop(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = label.shape
        ch, cw = min(self.crop_size, h), min(self.crop_size, w)
        for _ in range(self.crop_tries):
            y, x = random.randint(0, h - ch), random.randint(0, w - cw)
            crop = label[y:y + ch, x:x + cw]
            _, counts = np.unique(crop[crop != IGNORE_INDEX], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return image[y:y + ch, x:x + cw], crop

    def _pad(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        ph, pw = self.crop_size - label.shape[0], self.crop_size - label.shape[1]
        if ph <= 0 and pw <= 0:
            return image, label
        return F.pad(image, (0, pw, 0, ph)), F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)


@dataclass
class EvalResize:
    """Short side resized to ``img_size`` (long side bounded, :func:`resize_short_side_bounded`; normalised tensor);
    the label is returned untouched."""

    img_size: int

    def __call__(self, image: Image.Image, label: np.ndarray) -> tuple[Tensor, Tensor]:
        resized = resize_short_side_bounded(image, self.img_size, resample=Image.BILINEAR,
                                            name="an evaluation image")
        return image_to_tensor(resized), torch.from_numpy(label.astype(np.int64))
