"""SPair-71k keypoint correspondence (paper Appendix C.5): training-free, images resized to a square side (512 for
patch-16 models), dense features bilinearly upsampled, cosine argmax, PCK@0.1 of the target box's larger side."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ...data.images import load_image
from ..dense import extract_patch_features, feature_stride, image_to_tensor, require_data_root
from ..results import write_run_outputs
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


def _load_resized(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    image = load_image(path)
    return image_to_tensor(image.resize((size, size), Image.BILINEAR)), image.size


def transfer_keypoints(
    backbone: nn.Module, pair: KeypointPair, cfg: KeypointsConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> np.ndarray:
    """Predicted target keypoints ``[K, 2]`` (x, y) in the target's original pixel coordinates."""
    size = (cfg.image_size, cfg.image_size)
    (src, src_size), (trg, trg_size) = (_load_resized(p, cfg.image_size) for p in (pair.source, pair.target))
    features = extract_patch_features(backbone, torch.stack([src, trg]).to(device), autocast)
    points = torch.from_numpy(rescale_points(pair.source_kps, src_size, size)).float().to(device)
    matched = match_points(features[0], features[1], points, size, cfg.chunk_rows)
    return rescale_points(matched.cpu().numpy(), size, trg_size)


def evaluate_keypoints(
    backbone: nn.Module, cfg: KeypointsConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """PCK over all keypoints, averaged per category, and per category; returns (results, per-category rows)."""
    require_data_root(cfg.root, "the SPair-71k folder", key="root")
    stride = feature_stride(backbone)
    if cfg.image_size % stride:
        raise ValueError(f"image_size {cfg.image_size} must be a multiple of the backbone's stride {stride}")
    pairs = list_pairs(cfg.root, cfg.split, cfg.pairs_per_category, cfg.categories)
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    n_pairs: dict[str, int] = defaultdict(int)
    for pair in tqdm(pairs, desc="keypoints", dynamic_ncols=True, mininterval=1.0):
        pred = transfer_keypoints(backbone, pair, cfg, device, autocast)
        hits = pck_correct(pred, pair.target_kps, pair.target_bbox, cfg.alpha)
        correct[pair.category] += int(hits.sum())
        total[pair.category] += len(hits)
        n_pairs[pair.category] += 1
    rows = [{"category": c, "pck": 100 * correct[c] / total[c] if total[c] else float("nan"),
             "keypoints": total[c], "pairs": n_pairs[c]} for c in sorted(n_pairs)]
    with_points = [r["pck"] for r in rows if r["keypoints"]]
    all_points = sum(total.values())
    results = {
        "pck": 100 * sum(correct.values()) / all_points if all_points else float("nan"),
        "pck_category_mean": float(np.mean(with_points)) if with_points else float("nan"),
        "alpha": cfg.alpha, "num_pairs": len(pairs), "num_keypoints": all_points,
        "per_category": {r["category"]: r["pck"] for r in rows},
    }
    return results, rows


def run_keypoints(
    backbone: nn.Module, cfg: KeypointsConfig, output_dir: str | Path, *, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None, model_name: str = "",
) -> dict[str, Any]:
    """Evaluates and writes ``config.yaml``, ``results.json`` and ``results.csv`` (one row per category)."""
    results, rows = evaluate_keypoints(backbone, cfg, device, autocast)
    results = {"model": model_name, "protocol": "spair71k_pck", **results}
    summary = (f"keypoints {model_name}: PCK@{cfg.alpha:g} {results['pck']:.2f} (category mean "
               f"{results['pck_category_mean']:.2f}; {results['num_pairs']} pairs, {len(rows)} categories)")
    write_run_outputs(output_dir, config=cfg, results=results, summary=summary, table=rows)
    return results
