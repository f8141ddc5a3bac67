"""Evaluation inputs given either as feature folders (``eupe extract`` output) or as images to extract first."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .extractor import ExtractConfig, extract_features
from .store import MANIFEST, FeatureStore

logger = logging.getLogger(__name__)


def is_feature_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def split_sources(data_root: str | Path, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Path]:
    """``{split: data_root/split}`` for an ImageNet-style tree, with a clear error when a split is missing."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder {root} does not exist")
    found = {s: root / s for s in splits}
    missing = [s for s, p in found.items() if not p.is_dir()]
    if missing:
        layout = ", ".join(f"{root}/{s}/<class>/*" for s in splits)
        raise FileNotFoundError(f"Data folder {root} has no {' or '.join(repr(s) for s in missing)} folder; "
                                f"expected the layout {layout}")
    return found


def resolve_splits(data: str | None, train: str | None, val: str | None) -> tuple[str, str]:
    """Train and val sources from ``data`` (an ImageNet-style root) and/or explicit ``train``/``val`` paths."""
    if data:
        found = split_sources(data)
        train, val = train or str(found["train"]), val or str(found["val"])
    if not train or not val:
        raise ValueError("Give --data ROOT (with ROOT/train and ROOT/val) or both --train and --val "
                         "(feature folders from `eupe extract`, or image folders)")
    return train, val


@dataclass(frozen=True)
class FeatureBackbone:
    """The backbone that turns image inputs of an evaluation into features.

    ``load`` is only called when something must be extracted (evaluations on feature folders never need the
    model); ``model_id`` is recorded in feature manifests so that features of two models are never mixed.
    """

    load: Callable[[], nn.Module]
    device: torch.device
    model_id: str
    autocast: contextlib.AbstractContextManager | None = None


def open_features(
    source: str | Path, *, cache_dir: str | Path, backbone: FeatureBackbone, config: ExtractConfig
) -> FeatureStore:
    """The features of ``source``: a feature folder as is, or images extracted into ``cache_dir`` first
    (resumable, and reused by a later run with the same settings)."""
    if is_feature_folder(source):
        logger.info("reading features from %s", source)
        return FeatureStore(source)
    return extract_features(backbone.load(), source, cache_dir, config, device=backbone.device,
                            autocast=backbone.autocast, model_id=backbone.model_id)


def open_splits(
    train: str | Path, val: str | Path, *, output_dir: str | Path, backbone: FeatureBackbone, config: ExtractConfig
) -> tuple[FeatureStore, FeatureStore]:
    """Train and val feature stores; image sources are extracted into ``output_dir/features/{train,val}``."""
    stores = [open_features(source, cache_dir=Path(output_dir) / "features" / split, backbone=backbone, config=config)
              for split, source in (("train", train), ("val", val))]
    return stores[0], stores[1]
