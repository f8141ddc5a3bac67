"""Feature extraction: images to class/storage/patch tokens on disk (sharded, resumable), and their reader."""

from .extractor import ExtractConfig, compute_features, extract_features, feature_keys
from .sources import FeatureBackbone, is_feature_folder, open_features, open_splits, resolve_splits, split_sources
from .store import FeatureSet, FeatureStore, FeatureStoreError, load_features
from .transforms import ResizeCenterCrop, make_eval_transform

__all__ = [
    "ExtractConfig", "FeatureBackbone", "FeatureSet", "FeatureStore", "FeatureStoreError", "ResizeCenterCrop",
    "compute_features", "extract_features", "feature_keys", "is_feature_folder", "load_features", "make_eval_transform",
    "open_features", "open_splits", "resolve_splits", "split_sources",
]
