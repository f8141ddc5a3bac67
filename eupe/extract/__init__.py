"""Feature extraction: images to class/storage/patch tokens on disk (sharded, resumable), and their reader."""

from .extractor import ExtractConfig, compute_features, extract_features, feature_keys
from .sources import (
    FeatureBackbone,
    is_feature_folder,
    one_split,
    open_features,
    open_splits,
    require_same_features,
    resolve_splits,
    split_folders,
    split_sources,
)
from .store import FeatureSet, FeatureStore, FeatureStoreError, load_features, require_finite
from .transforms import ResizeCenterCrop, make_eval_transform, resize_short_side_bounded

__all__ = [
    "ExtractConfig", "FeatureBackbone", "FeatureSet", "FeatureStore", "FeatureStoreError", "ResizeCenterCrop",
    "compute_features", "extract_features", "feature_keys", "is_feature_folder", "load_features", "make_eval_transform",
    "one_split", "open_features", "open_splits", "require_finite", "require_same_features", "resize_short_side_bounded",
    "resolve_splits", "split_folders", "split_sources",
]
