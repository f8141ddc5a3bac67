"""ADE20K (ADEChallengeData2016 release layout) for the linear segmentation probe.

Layout: ``<root>/images/<split>/*.jpg`` with one ``<root>/annotations/<split>/<same stem>.png`` each, a single-channel
PNG whose value 0 means "other" (ignored) and 1..150 the classes. ``reduce_zero_label`` maps 0 -> 255 (ignore) and
1..150 -> 0..149, as the reference evaluation does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..dense.data import ImageTargetDataset

IGNORE_INDEX = 255
ADE20K_CLASSES = 150

T = TypeVar("T")


class SegmentationDataError(ValueError):
    """A segmentation dataset that does not have the expected layout or content."""


@dataclass(frozen=True)
class SegmentationSample:
    image: Path
    label: Path


def list_ade20k(root: str | Path, split: str) -> list[SegmentationSample]:
    """The (image, annotation) pairs of ``split`` ("training" or "validation"), sorted by file name.

    Raises ``FileNotFoundError`` naming the missing folder or the annotation an image lacks.
    """
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "annotations" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"ADE20K split folder {folder} does not exist; the dataset root must hold images/{split}/ and "
                f"annotations/{split}/ (the ADEChallengeData2016 layout)"
            )
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise SegmentationDataError(f"ADE20K split folder {image_dir} holds no images")
    samples = []
    for image in images:
        label = label_dir / f"{image.stem}.png"
        if not label.is_file():
            raise FileNotFoundError(f"image {image} has no annotation: expected {label}")
        samples.append(SegmentationSample(image, label))
    return samples


def read_label(path: str | Path, num_classes: int = ADE20K_CLASSES, reduce_zero_label: bool = True) -> np.ndarray:
    """Reads a single-channel label PNG as ``uint8`` class indices (255 = ignore), checking the value range.

    With ``reduce_zero_label`` the file holds 0..num_classes (0 = unlabelled), otherwise 0..num_classes-1 or 255.
    """
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I;16", "I"):
            raise SegmentationDataError(f"label file {path} has mode {image.mode}; expected a single-channel PNG")
        label = np.asarray(image).astype(np.int64)
    top = num_classes if reduce_zero_label else num_classes - 1
    bad = label > top
    if not reduce_zero_label:
        bad &= label != IGNORE_INDEX
    if bad.any():
        raise SegmentationDataError(
            f"label file {path} holds value {int(label[bad].max())}, outside the class range 0..{top} of a "
            f"{num_classes}-class dataset (set num_classes if this dataset has more classes)"
        )
    if reduce_zero_label:
        label = np.where(label == 0, IGNORE_INDEX, label - 1)
    return label.astype(np.uint8)


class SegmentationDataset(ImageTargetDataset[SegmentationSample, T]):
    """Decoded (RGB image, label array) pairs passed through ``transform``."""

    def __init__(
        self,
        samples: list[SegmentationSample],
        transform: Callable[[Image.Image, np.ndarray], T],
        num_classes: int = ADE20K_CLASSES,
        reduce_zero_label: bool = True,
    ) -> None:
        super().__init__(samples, transform)
        self.num_classes, self.reduce_zero_label = num_classes, reduce_zero_label

    def read_target(self, sample: SegmentationSample) -> np.ndarray:
        return read_label(sample.label, self.num_classes, self.reduce_zero_label)

    def size_mismatch(self, sample: SegmentationSample, label: np.ndarray, image: Image.Image) -> SegmentationDataError:
        return SegmentationDataError(f"label {sample.label} is {label.shape[1]}x{label.shape[0]} but image "
                                     f"{sample.image} is {image.width}x{image.height}")
