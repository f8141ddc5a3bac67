"""NYUv2 linear monocular depth on frozen patch tokens (RMSE and the standard depth metrics)."""

from .data import DepthDataError, read_depth, read_split_list
from .head import DepthHead, SigLoss, bin_centres, bins_to_depth
from .metrics import METRIC_NAMES, DepthMetricAverager, depth_metrics, eigen_mask
from .protocol import DepthConfig, evaluate_depth, load_depth_head, predict_depth, run_depth, train_depth_head

__all__ = [
    "METRIC_NAMES",
    "DepthConfig",
    "DepthDataError",
    "DepthHead",
    "DepthMetricAverager",
    "SigLoss",
    "bin_centres",
    "bins_to_depth",
    "depth_metrics",
    "eigen_mask",
    "evaluate_depth",
    "load_depth_head",
    "predict_depth",
    "read_depth",
    "read_split_list",
    "run_depth",
    "train_depth_head",
]
