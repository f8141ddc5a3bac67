"""NYU Depth v2 in the BTS split layout, for the linear depth probe.

A list file holds one sample per line, ``rgb_path depth_path focal``, with paths relative to the split's data
folder (BTS: ``sync/`` for training, ``official_splits/test/`` for testing; a leading ``/`` is allowed). Depth maps
are uint16 PNGs in millimetres (divided by ``depth_scale`` = 1000 to get metres, 0 = no measurement). Lines whose
depth path is ``None`` (no ground truth) are skipped, as BTS does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..dense.data import ImageTargetDataset

logger = logging.getLogger(__name__)
T = TypeVar("T")


class DepthDataError(ValueError):
    """A depth dataset file (list, image or depth map) that does not have the expected content."""


@dataclass(frozen=True)
class DepthSample:
    image: Path
    depth: Path
    focal: float


def read_split_list(list_file: str | Path, data_dir: str | Path) -> list[DepthSample]:
    """Parses a BTS list file; paths are resolved under ``data_dir`` and must exist.

    Raises ``FileNotFoundError`` for a missing list file, data folder or referenced file (naming the line), and
    ``DepthDataError`` for a malformed line.
    """
    list_file, data_dir = Path(list_file), Path(data_dir)
    if not list_file.is_file():
        raise FileNotFoundError(f"depth split list {list_file} does not exist (lines 'rgb_path depth_path focal')")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"depth data folder {data_dir} does not exist (the folder the paths of "
                                f"{list_file.name} are relative to)")
    samples, skipped = [], 0
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DepthDataError(f"{list_file}:{lineno}: expected 'rgb_path depth_path [focal]', got {line!r}")
        if fields[1] == "None":
            skipped += 1
            continue
        try:
            focal = float(fields[2]) if len(fields) > 2 else float("nan")
        except ValueError:
            raise DepthDataError(f"{list_file}:{lineno}: focal length {fields[2]!r} is not a number") from None
        image, depth = (data_dir / f.lstrip("/") for f in fields[:2])
        for path in (image, depth):
            if not path.is_file():
                raise FileNotFoundError(f"{list_file}:{lineno} references {path}, which does not exist")
        samples.append(DepthSample(image, depth, focal))
    if skipped:
        logger.info("%s: skipped %d lines without ground truth", list_file, skipped)
    if not samples:
        raise DepthDataError(f"depth split list {list_file} names no samples")
    return samples


def read_depth(path: str | Path, depth_scale: float = 1000.0) -> np.ndarray:
    """A depth PNG as float32 metres (``value / depth_scale``; 0 stays 0 = invalid)."""
    with Image.open(path) as image:
        if image.mode not in ("I;16", "I;16B", "I", "L", "F"):
            raise DepthDataError(f"depth map {path} has mode {image.mode}; expected a single-channel 16-bit PNG")
        return np.asarray(image).astype(np.float32) / depth_scale


class DepthDataset(ImageTargetDataset[DepthSample, T]):
    """Decoded (RGB image, depth in metres) pairs passed through ``transform``; sizes must match."""

    def __init__(self, samples: list[DepthSample], transform: Callable[[Image.Image, np.ndarray], T],
                 depth_scale: float = 1000.0) -> None:
        super().__init__(samples, transform)
        self.depth_scale = depth_scale

    def read_target(self, sample: DepthSample) -> np.ndarray:
        return read_depth(sample.depth, self.depth_scale)

    def size_mismatch(self, sample: DepthSample, depth: np.ndarray, image: Image.Image) -> DepthDataError:
        return DepthDataError(f"depth map {sample.depth} is {depth.shape[1]}x{depth.shape[0]} but its image "
                              f"{sample.image} is {image.width}x{image.height}")
