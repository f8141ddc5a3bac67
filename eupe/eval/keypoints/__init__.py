"""SPair-71k training-free keypoint correspondence (PCK@0.1)."""

from .data import KeypointDataError, KeypointPair, list_pairs, read_pair
from .matching import match_points, pck_correct, rescale_points, sample_features
from .protocol import KeypointsConfig, evaluate_keypoints, run_keypoints, transfer_keypoints

__all__ = [
    "KeypointDataError",
    "KeypointPair",
    "KeypointsConfig",
    "evaluate_keypoints",
    "list_pairs",
    "match_points",
    "pck_correct",
    "read_pair",
    "rescale_points",
    "run_keypoints",
    "sample_features",
    "transfer_keypoints",
]
