"""Dense feature matching for keypoint transfer: features bilinearly upsampled to the resized image, cosine
argmax, and the coordinate maps between original images and the resized grid.

Pixel centres are used throughout: pixel ``i`` of an image of size ``n`` covers [i, i+1) and has centre i + 0.5,
so a coordinate ``x`` in a ``n``-pixel image is ``(x + 0.5) * m / n - 0.5`` in the same image resized to ``m``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def rescale_points(points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Maps ``[K, 2]`` (x, y) pixel coordinates between image sizes given as (width, height)."""
    scale = np.asarray(to_size, dtype=np.float64) / np.asarray(from_size, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5


def sample_features(feature_map: Tensor, points: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Features ``[N, D]`` at pixel positions ``points`` ``[N, 2]`` (x, y) of an image of (width, height)
    ``image_size`` whose ``[D, h, w]`` feature map is ``feature_map``.

    Identical to reading ``F.interpolate(feature_map, size=image, mode="bilinear", align_corners=False)`` at those
    pixels, without materialising the full-resolution map.
    """
    w, h = image_size
    grid = torch.stack([(points[:, 0] + 0.5) / w * 2 - 1, (points[:, 1] + 0.5) / h * 2 - 1], dim=-1)
    grid = grid.to(feature_map)[None, None]  # [1, 1, N, 2]
    out = F.grid_sample(feature_map[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def match_points(
    source_map: Tensor, target_map: Tensor, source_points: Tensor, image_size: tuple[int, int], chunk_rows: int = 64,
) -> Tensor:
    """For each source pixel, the target pixel ``[N, 2]`` (x, y) of highest cosine similarity.

    Both maps are ``[D, h, w]`` features of images resized to ``image_size`` (width, height); source points are
    rounded to the nearest pixel. Target rows are processed ``chunk_rows`` at a time to bound memory.
    """
    w, h = image_size
    pixels = source_points.round().clamp(min=0)
    pixels[:, 0].clamp_(max=w - 1)
    pixels[:, 1].clamp_(max=h - 1)
    query = F.normalize(sample_features(source_map, pixels, image_size).float(), dim=-1)
    best = torch.full((len(query),), -float("inf"), device=query.device)
    best_index = torch.zeros(len(query), dtype=torch.long, device=query.device)
    xs = torch.arange(w, device=query.device, dtype=torch.float32)
    for row0 in range(0, h, chunk_rows):
        ys = torch.arange(row0, min(row0 + chunk_rows, h), device=query.device, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        keys = F.normalize(sample_features(target_map, grid, image_size).float(), dim=-1)
        score, index = (query @ keys.T).max(dim=1)
        better = score > best
        best = torch.where(better, score, best)
        best_index = torch.where(better, index + row0 * w, best_index)
    return torch.stack([best_index % w, best_index // w], dim=-1).float()


def pck_correct(pred: np.ndarray, gt: np.ndarray, bbox: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Boolean ``[K]``: prediction within ``alpha`` x the larger side of ``bbox`` (x1, y1, x2, y2) of the truth."""
    threshold = alpha * max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1) <= threshold
