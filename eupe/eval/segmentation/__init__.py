"""ADE20K linear semantic segmentation on frozen patch tokens (mIoU)."""

from .data import ADE20K_CLASSES, IGNORE_INDEX, SegmentationDataError, list_ade20k, read_label
from .metrics import ConfusionMatrix
from .protocol import (
    SegmentationConfig,
    evaluate_segmentation,
    load_segmentation_head,
    predict_segmentation,
    run_segmentation,
    train_segmentation_head,
)

__all__ = [
    "ADE20K_CLASSES",
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "SegmentationConfig",
    "SegmentationDataError",
    "evaluate_segmentation",
    "list_ade20k",
    "load_segmentation_head",
    "predict_segmentation",
    "read_label",
    "run_segmentation",
    "train_segmentation_head",
]
