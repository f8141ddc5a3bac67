"""Pictures of trained dense heads' predictions: segmentation classes blended over the image, depth beside it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..eval.depth import load_depth_head, predict_depth
from ..eval.segmentation import load_segmentation_head, predict_segmentation
from ..eval.segmentation.protocol import SegEvalConfig
from ..extract.transforms import resize_short_side_bounded
from .colors import class_palette, colorize_depth
from .images import side_by_side, to_batch
from .pca import picture_name


def segmentation_overlay(image: Image.Image, classes: np.ndarray, alpha: float = 0.5,
                         palette: np.ndarray | None = None) -> Image.Image:
    """``image`` blended with the colour of each pixel's class (``classes``: ``[H, W]`` ints of the image size)."""
    if classes.shape != (image.height, image.width):
        raise ValueError(f"class map {classes.shape} does not match the image size {image.height}x{image.width}")
    palette = class_palette(int(classes.max()) + 1) if palette is None else palette
    colours = palette[classes].astype(np.float32)
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colours
    return Image.fromarray(blended.round().astype(np.uint8))


def segmentation_pictures(
    backbone: nn.Module, head_path: str | Path, images: list[Image.Image], size: int | None = None,
    alpha: float = 0.5, device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None, *, identity: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> list[Image.Image]:
    """Each image (short side ``size``, default: the head's evaluation size; long side bounded) beside its predicted
    classes. Given the backbone's ``identity``, a head trained on another backbone is refused."""
    head, meta = load_segmentation_head(head_path, width=backbone.embed_dim, identity=identity)
    head = head.to(device)
    eval_cfg = SegEvalConfig(**meta["eval"])
    palette = class_palette(meta["num_classes"])
    pictures = []
    for i, image in enumerate(images):
        resized = resize_short_side_bounded(image, size or eval_cfg.img_size, resample=Image.BILINEAR,
                                            name=picture_name(names, i))
        with torch.inference_mode():
            logits = predict_segmentation(backbone, head, to_batch([resized], device), eval_cfg, autocast)
        classes = logits.argmax(1)[0].cpu().numpy()
        pictures.append(side_by_side(resized, segmentation_overlay(resized, classes, alpha, palette)))
    return pictures


def depth_pictures(
    backbone: nn.Module, head_path: str | Path, images: list[Image.Image], size: int = 480,
    device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None, *,
    identity: Mapping[str, Any] | None = None, names: Sequence[str] | None = None,
) -> list[Image.Image]:
    """Each image (short side ``size``, long side bounded) beside its predicted depth (near = bright), flip-TTA as
    in evaluation. Given the backbone's ``identity``, a head trained on another backbone is refused."""
    head, _ = load_depth_head(head_path, width=backbone.embed_dim, identity=identity)
    head = head.to(device)
    pictures = []
    for i, image in enumerate(images):
        resized = resize_short_side_bounded(image, size, resample=Image.BILINEAR, name=picture_name(names, i))
        with torch.inference_mode():
            depth = predict_depth(backbone, head, to_batch([resized], device), flip_tta=True, autocast=autocast)
        pictures.append(side_by_side(resized, colorize_depth(depth[0, 0].cpu().numpy())))
    return pictures
