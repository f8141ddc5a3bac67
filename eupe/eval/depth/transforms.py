"""Image/depth transforms of the NYUv2 linear protocol: NYU border crop, random crop, flip and brightness for
training; the full image for evaluation."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..dense.transforms import image_to_tensor
from .data import DepthDataError


def _pair(image: np.ndarray, depth: np.ndarray) -> tuple[Tensor, Tensor]:
    return image_to_tensor(image), torch.from_numpy(np.ascontiguousarray(depth))[None]


@dataclass
class TrainAugment:
    """The reference's NYU training augmentation: ``border_crop`` (x1, y1, x2, y2; NYU's white border, null: none),
    rotation by U(-``rotation``, ``rotation``) degrees with p=0.5 (depth resampled nearest, uncovered pixels
    invalid), flip with ``flip_prob``, random ``crop_size`` (h, w) crop, and with ``color_prob`` a colour change
    (gamma, brightness and per-channel factors, each drawn from its range) on [0, 1] pixels."""

    crop_size: tuple[int, int] = (416, 544)
    border_crop: tuple[int, int, int, int] | None = (43, 45, 608, 472)
    rotation: float = 2.5
    flip_prob: float = 0.5
    color_prob: float = 0.5
    brightness: tuple[float, float] = (0.75, 1.25)
    gamma: tuple[float, float] = (0.9, 1.1)
    color: tuple[float, float] = (0.9, 1.1)

    def __call__(self, image: Image.Image, depth: np.ndarray) -> tuple[Tensor, Tensor]:
        array = np.asarray(image)
        if self.border_crop is not None:
            x1, y1, x2, y2 = self.border_crop
            if x2 > array.shape[1] or y2 > array.shape[0]:
                raise DepthDataError(f"border crop {self.border_crop} does not fit a {array.shape[1]}x"
                                     f"{array.shape[0]} image; set train.border_crop=null for non-NYU sizes")
            array, depth = array[y1:y2, x1:x2], depth[y1:y2, x1:x2]
        if self.rotation and random.random() < 0.5:
            angle = random.uniform(-self.rotation, self.rotation)
            array = np.asarray(Image.fromarray(array).rotate(angle, Image.BILINEAR))
            depth = np.asarray(Image.fromarray(depth, "F").rotate(angle, Image.NEAREST))
        if random.random() < self.flip_prob:
            array, depth = array[:, ::-1], depth[:, ::-1]
        h, w = depth.shape
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        y, x = random.randint(0, h - ch), random.randint(0, w - cw)
        array, depth = array[y:y + ch, x:x + cw], depth[y:y + ch, x:x + cw]
        if random.random() < self.color_prob:
            array = self._color(array)
        return _pair(array, depth)

    def _color(self, array: np.ndarray) -> np.ndarray:
        x = (array.astype(np.float32) / 255) ** random.uniform(*self.gamma)
        x = x * random.uniform(*self.brightness) * np.array([random.uniform(*self.color) for _ in range(3)])
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def eval_transform(image: Image.Image, depth: np.ndarray) -> tuple[Tensor, Tensor]:
    """The full image and depth map, as tensors."""
    return _pair(np.asarray(image), depth)
