"""SPair-71k keypoint correspondence (paper Appendix C.5): training-free, images resized to a square side (512 for
patch-16 models), dense features bilinearly upsampled, cosine argmax, PCK@0.1 of the target box's larger side."""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ...data.images import load_image
from ..backbone import EvalBackbone
from ..dense.data import require_data_root
from ..dense.features import extract_patch_features, feature_stride
from ..dense.transforms import image_to_tensor
from ..results import write_run_outputs
from ..settings import check_settings, non_negative, positive
from .data import KeypointPair, list_pairs
from .matching import match_points, pck_correct, rescale_points

logger = logging.getLogger(__name__)


@dataclass
class KeypointsConfig:
    root: str = ""
    split: str = "test"
    pairs_per_category: int | None = 100
    categories: list[str] | None = None
    image_size: int = 512
    alpha: float = 0.1
    chunk_rows: int = 64
    cached_images: int = 64  # most recent images whose feature maps are kept: SPair pairs reuse images


class ImageFeatures:
    """Patch-feature map ``[D, h, w]`` and original (width, height) of an image path, each image forwarded once
    while it stays among the ``capacity`` most recently used (pairs share images)."""

    def __init__(self, backbone: nn.Module, image_size: int, device: torch.device,
                 autocast: contextlib.AbstractContextManager | None = None, capacity: int = 64) -> None:
        self.backbone, self.image_size, self.device, self.autocast = backbone, image_size, device, autocast
        self.capacity = capacity
        self._cache: OrderedDict[Path, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
        self.forwards = 0

    def __call__(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = load_image(path)
        resized = image_to_tensor(image.resize((self.image_size, self.image_size), Image.BILINEAR))
        entry = extract_patch_features(self.backbone, resized[None].to(self.device), self.autocast)[0], image.size
        self.forwards += 1
        if self.capacity > 0:
            self._cache[path] = entry
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return entry


def transfer_keypoints(
    backbone: nn.Module, pair: KeypointPair, cfg: KeypointsConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None, features: ImageFeatures | None = None,
) -> np.ndarray:
    """Predicted target keypoints ``[K, 2]`` (x, y) in the target's original pixel coordinates; ``features``
    (default: a fresh one) serves the images' feature maps."""
    features = features or ImageFeatures(backbone, cfg.image_size, device, autocast, capacity=0)
    size = (cfg.image_size, cfg.image_size)
    (src_map, src_size), (trg_map, trg_size) = features(pair.source), features(pair.target)
    points = torch.from_numpy(rescale_points(pair.source_kps, src_size, size)).float().to(device)
    matched = match_points(src_map, trg_map, points, size, cfg.chunk_rows)
    return rescale_points(matched.cpu().numpy(), size, trg_size)


def evaluate_keypoints(
    backbone: nn.Module, cfg: KeypointsConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """PCK over all keypoints, averaged per category, and per category; returns (results, per-category rows)."""
    _check_keypoints_config(cfg)
    stride = feature_stride(backbone)
    if cfg.image_size % stride:
        raise ValueError(f"image_size {cfg.image_size} must be a multiple of the backbone's stride {stride}")
    pairs = list_pairs(cfg.root, cfg.split, cfg.pairs_per_category, cfg.categories)
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    n_pairs: dict[str, int] = defaultdict(int)
    features = ImageFeatures(backbone, cfg.image_size, device, autocast, capacity=cfg.cached_images)
    for pair in tqdm(pairs, desc="keypoints", dynamic_ncols=True, mininterval=1.0):
        pred = transfer_keypoints(backbone, pair, cfg, device, autocast, features)
        hits = pck_correct(pred, pair.target_kps, pair.target_bbox, cfg.alpha)
        correct[pair.category] += int(hits.sum())
        total[pair.category] += len(hits)
        n_pairs[pair.category] += 1
    rows = [{"category": c, "pck": 100 * correct[c] / total[c] if total[c] else None,
             "keypoints": total[c], "pairs": n_pairs[c]} for c in sorted(n_pairs)]
    with_points = [r["pck"] for r in rows if r["keypoints"]]
    all_points = sum(total.values())
    if not all_points:
        raise ValueError(f"the {len(pairs)} SPair pairs of split {cfg.split!r} in {cfg.root} hold no keypoints: "
                         "there is nothing to measure PCK on")
    results = {
        "pck": 100 * sum(correct.values()) / all_points,
        "pck_category_mean": float(np.mean(with_points)),
        "alpha": cfg.alpha, "num_pairs": len(pairs), "num_keypoints": all_points, "image_forwards": features.forwards,
        "per_category": {r["category"]: r["pck"] for r in rows},
    }
    return results, rows


def run_keypoints(backbone: EvalBackbone, config: KeypointsConfig, output_dir: str | Path) -> dict[str, Any]:
    """Evaluates and writes ``config.yaml``, ``results.json`` and ``results.csv`` (one row per category)."""
    _check_keypoints_config(config)
    results, rows = evaluate_keypoints(backbone.load(), config, backbone.device, backbone.autocast)
    results = {"model": backbone.name, "backbone": backbone.identity(), "protocol": "spair71k_pck", **results}
    summary = (f"keypoints {backbone.name}: PCK@{config.alpha:g} {results['pck']:.2f} (category mean "
               f"{results['pck_category_mean']:.2f}; {results['num_pairs']} pairs, {len(rows)} categories)")
    write_run_outputs(output_dir, config=config, results=results, summary=summary, table=rows)
    return results


def _check_keypoints_config(cfg: KeypointsConfig) -> None:
    """Refuses settings outside their range and a missing SPair-71k root, before any image is read."""
    check_settings("eval keypoints", [
        ("pairs_per_category", cfg.pairs_per_category, cfg.pairs_per_category is None or cfg.pairs_per_category > 0,
         "must be positive, or null for every pair"),
        positive("image_size", cfg.image_size),
        ("alpha", cfg.alpha, 0 < cfg.alpha <= 1, "must be in (0, 1]"),
        positive("chunk_rows", cfg.chunk_rows), non_negative("cached_images", cfg.cached_images),
    ])
    require_data_root(cfg.root, "the SPair-71k folder", key="root")
