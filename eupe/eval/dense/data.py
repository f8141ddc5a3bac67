"""The base of the dense datasets, (RGB image, per-pixel target) pairs, and the check of a dataset root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from ...data.images import load_image


class ImageSample(Protocol):
    """A dataset sample with the path of its RGB image."""

    @property
    def image(self) -> Path: ...


S = TypeVar("S", bound=ImageSample)
T = TypeVar("T")


class ImageTargetDataset(torch.utils.data.Dataset, Generic[S, T]):
    """Decoded (RGB image, per-pixel target array) pairs of the same size, passed through ``transform``.

    Subclasses read a sample's target (:meth:`read_target`) and word the error for a target whose size is not the
    image's (:meth:`size_mismatch`).
    """

    def __init__(self, samples: list[S], transform: Callable[[Image.Image, np.ndarray], T]) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def read_target(self, sample: S) -> np.ndarray:
        raise NotImplementedError

    def size_mismatch(self, sample: S, target: np.ndarray, image: Image.Image) -> Exception:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        sample = self.samples[index]
        image = load_image(sample.image)
        target = self.read_target(sample)
        if target.shape != (image.height, image.width):
            raise self.size_mismatch(sample, target, image)
        return image, target

    def __getitem__(self, index: int) -> T:
        return self.transform(*self.load(index))


def require_data_root(root: str | None, expected: str, *, key: str = "data.root") -> None:
    """Raises ``ValueError`` when no dataset root is configured and ``FileNotFoundError`` when it is not a folder.

    Protocols call it before loading the backbone, so that a typo never costs a weights download. ``expected``
    describes the folder wanted and ``key`` names the config entry that holds it.
    """
    if not root:
        raise ValueError(f"no dataset root: pass --data-root or set {key}=PATH ({expected})")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
