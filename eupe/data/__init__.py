"""Image input: decoding (images), the model-card transform (transforms); training streams live in sources/augment."""

from .images import (
    ImageDecodeError,
    ImageFolderDataset,
    ImageRecord,
    collate_skipping_failures,
    list_images,
    load_image,
)
from .transforms import EvalTransform, make_transform

__all__ = [
    "EvalTransform",
    "ImageDecodeError",
    "ImageFolderDataset",
    "ImageRecord",
    "collate_skipping_failures",
    "list_images",
    "load_image",
    "make_transform",
]
