"""Evaluation inputs given either as feature folders (``eupe extract`` output) or as images to extract first."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .extractor import FEATURE_SETTINGS, ExtractConfig, extract_features
from .provenance import describe_differences
from .store import MANIFEST, FeatureStore, FeatureStoreError

logger = logging.getLogger(__name__)

#: Folder names that mark a dataset root holding splits rather than classes.
SPLIT_NAMES = ("train", "training", "trn", "val", "validation", "test")


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
    """Train and val sources from ``data`` (an ImageNet-style root) and/or explicit ``train``/``val`` paths; an
    explicit path that is itself a root of split folders stands for its own ``train``/``val`` (:func:`one_split`)."""
    train = one_split(train, "train", "--train") if train else train
    val = one_split(val, "val", "--val") if val else val
    if data:
        found = split_sources(data)
        train, val = train or str(found["train"]), val or str(found["val"])
    if not train or not val:
        raise ValueError("Give --data ROOT (with ROOT/train and ROOT/val) or both --train and --val "
                         "(feature folders from `eupe extract`, or image folders)")
    return train, val


def split_folders(path: str | Path) -> list[str]:
    """The split folders (``train``, ``val``, ...) of a dataset root holding at least two of them; ``[]`` for
    anything else (a class folder tree, a file, a feature folder)."""
    root = Path(path)
    if not root.is_dir() or is_feature_folder(root):
        return []
    found = [name for name in SPLIT_NAMES if (root / name).is_dir()]
    return found if len(found) >= 2 else []


def one_split(source: str, split: str, flag: str) -> str:
    """``source``, or its ``split`` folder (with a logged note) when it is a dataset root of split folders (whose
    splits would otherwise be taken as classes); such a root without ``split`` is a ``ValueError`` listing the
    splits it has. ``flag`` names the option ``source`` came from."""
    splits = split_folders(source)
    if not splits:
        return source
    if split in splits:
        chosen = str(Path(source) / split)
        logger.warning("%s %s holds the split folders %s, not classes: using %s", flag, source, ", ".join(splits),
                       chosen)
        return chosen
    raise ValueError(f"{flag} {source} holds the split folders {', '.join(splits)}, not class folders, and no "
                     f"{split!r}: pass {flag} {Path(source) / '<split>'} with one of {', '.join(splits)}")


@dataclass(frozen=True)
class FeatureBackbone:
    """The backbone that turns image inputs of an evaluation into features.

    ``load`` is only called when something must be extracted (evaluations on feature folders never need the
    model); ``identity`` says what it is by content (see :func:`extract_features`) and is recorded in feature
    manifests and head files, so that features of two models are never mixed. Both are called lazily.
    """

    load: Callable[[], nn.Module]
    device: torch.device
    identity: Callable[[], dict[str, Any]]
    autocast: contextlib.AbstractContextManager | None = None


def open_features(
    source: str | Path, *, cache_dir: str | Path, backbone: FeatureBackbone, config: ExtractConfig
) -> FeatureStore:
    """The features of ``source``: a feature folder as is, or images extracted into ``cache_dir`` first
    (resumable, and reused by a later run with the same settings and the same backbone content)."""
    if is_feature_folder(source):
        logger.info("reading features from %s", source)
        return FeatureStore(source)
    return extract_features(backbone.load(), source, cache_dir, config, device=backbone.device,
                            autocast=backbone.autocast, identity=backbone.identity())


def open_splits(
    train: str | Path, val: str | Path, *, output_dir: str | Path, backbone: FeatureBackbone, config: ExtractConfig
) -> tuple[FeatureStore, FeatureStore]:
    """Train and val feature stores; image sources are extracted into ``output_dir/features/{train,val}``.

    Raises :class:`FeatureStoreError` when the two were extracted by different models or preprocessing (e.g. a
    train feature folder of one model and val images extracted with another).
    """
    stores = [open_features(source, cache_dir=Path(output_dir) / "features" / split, backbone=backbone, config=config)
              for split, source in (("train", train), ("val", val))]
    require_same_features(*stores)
    return stores[0], stores[1]


def require_same_features(train: FeatureStore, val: FeatureStore) -> None:
    """Raises :class:`FeatureStoreError` unless both stores agree on :data:`FEATURE_SETTINGS` (model identity,
    preprocessing, resolution, layers)."""
    settings = [{k: store.manifest["settings"].get(k) for k in FEATURE_SETTINGS} for store in (train, val)]
    difference = describe_differences(*settings, labels=("in train", "in val"))
    if difference:
        raise FeatureStoreError(f"The train features ({train.root}) and the val features ({val.root}) were not "
                                f"extracted alike: {difference}; extract both with the same model, weights and "
                                "settings")
