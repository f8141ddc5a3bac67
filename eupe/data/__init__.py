"""Image input: transforms (and, later, datasets and loaders)."""

from .transforms import EvalTransform, make_transform

__all__ = ["EvalTransform", "make_transform"]
