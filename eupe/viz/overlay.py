"""Pictures of trained dense heads' predictions: segmentation classes blended over the image with a legend of the
classes present, and depth beside the image with a colour bar in metres."""

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
from ..eval.segmentation.classes import ADE20K_CLASS_NAMES
from ..eval.segmentation.protocol import SegEvalConfig
from ..extract.transforms import resize_short_side_bounded
from .charts import Panel, figure_image, panel_figure
from .colors import class_palette
from .images import picture_name, picture_title, to_batch

#: Legend entries at most: the classes covering most of the picture (more would not fit beside it).
LEGEND_ENTRIES = 12


def segmentation_overlay(image: Image.Image, classes: np.ndarray, alpha: float = 0.5,
                         palette: np.ndarray | None = None) -> Image.Image:
    """``image`` blended with the colour of each pixel's class (``classes``: ``[H, W]`` ints of the image size)."""
    if classes.shape != (image.height, image.width):
        raise ValueError(f"class map {classes.shape} does not match the image size {image.height}x{image.width}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay opacity alpha must be in [0, 1], got {alpha}")
    palette = class_palette(int(classes.max()) + 1) if palette is None else palette
    colours = palette[classes].astype(np.float32)
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colours
    return Image.fromarray(blended.round().astype(np.uint8))


def class_names_for(num_classes: int) -> list[str]:
    """Names of a head's classes: ADE20K's for a 150-class head (what ``eupe eval segmentation`` trains),
    ``class <i>`` otherwise."""
    if num_classes == len(ADE20K_CLASS_NAMES):
        return list(ADE20K_CLASS_NAMES)
    return [f"class {i}" for i in range(num_classes)]


def _share(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.005 else "<1%"


def segmentation_figure(image: Image.Image, classes: np.ndarray, class_names: Sequence[str], palette: np.ndarray,
                        *, title: str, alpha: float = 0.5) -> Any:
    """The image beside its predicted classes, with a legend of the classes present (largest first, at most
    :data:`LEGEND_ENTRIES`, each with its share of the pixels)."""
    counts = np.bincount(classes.ravel(), minlength=len(class_names))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    shown = present[:LEGEND_ENTRIES]
    legend = [(f"{class_names[c]} ({_share(counts[c] / classes.size)})", palette[c]) for c in shown]
    heading = "classes (share of pixels)" if len(shown) == len(present) else \
        f"{len(shown)} largest of {len(present)} classes\n(share of pixels)"
    return panel_figure([Panel(image, "input"),
                         Panel(segmentation_overlay(image, classes, alpha, palette), "predicted classes",
                               legend=legend, legend_title=heading)], title=title)


def segmentation_pictures(
    backbone: nn.Module, head_path: str | Path, images: list[Image.Image], size: int | None = None,
    alpha: float = 0.5, device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None, *, identity: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None, model_label: str | None = None,
) -> list[Image.Image]:
    """Each image (short side ``size``, default: the head's evaluation size; long side bounded) beside its predicted
    classes, titled with ``model_label`` (default: the backbone's class name), the image's name and size, with a
    class legend. Given the backbone's ``identity``, a head trained on another backbone is refused."""
    head, meta = load_segmentation_head(head_path, width=backbone.embed_dim, identity=identity)
    head = head.to(device)
    eval_cfg = SegEvalConfig(**meta["eval"])
    palette, class_names = class_palette(meta["num_classes"]), class_names_for(meta["num_classes"])
    pictures = []
    for i, image in enumerate(images):
        resized = resize_short_side_bounded(image, size or eval_cfg.img_size, resample=Image.BILINEAR,
                                            name=picture_name(names, i))
        with torch.inference_mode():
            logits = predict_segmentation(backbone, head, to_batch([resized], device), eval_cfg, autocast)
        classes = logits.argmax(1)[0].cpu().numpy()
        title = picture_title("Segmentation head", backbone, model_label, picture_name(names, i), resized)
        pictures.append(figure_image(segmentation_figure(resized, classes, class_names, palette, title=title,
                                                         alpha=alpha)))
    return pictures


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """Colour range of a depth map: its 2nd to 98th percentile, so that a few extreme pixels do not flatten the
    rest (the colour bar marks the clipped ends)."""
    low, high = np.percentile(depth, [2, 98])
    return float(low), float(max(high, low + 1e-6))


def depth_figure(image: Image.Image, depth: np.ndarray, *, title: str) -> Any:
    """The image beside its predicted depth in metres (near = bright), with a colour bar in metres."""
    return panel_figure([Panel(image, "input"),
                         Panel(depth, "predicted depth (near = bright)", cmap="viridis_r",
                               value_range=depth_range(depth), colour_bar="depth (m)")], title=title)


def depth_pictures(
    backbone: nn.Module, head_path: str | Path, images: list[Image.Image], size: int = 480,
    device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None, *,
    identity: Mapping[str, Any] | None = None, names: Sequence[str] | None = None, model_label: str | None = None,
) -> list[Image.Image]:
    """Each image (short side ``size``, long side bounded) beside its predicted depth with a colour bar in metres,
    flip-TTA as in evaluation, titled as :func:`segmentation_pictures`. Given the backbone's ``identity``, a head
    trained on another backbone is refused."""
    head, _ = load_depth_head(head_path, width=backbone.embed_dim, identity=identity)
    head = head.to(device)
    pictures = []
    for i, image in enumerate(images):
        resized = resize_short_side_bounded(image, size, resample=Image.BILINEAR, name=picture_name(names, i))
        with torch.inference_mode():
            depth = predict_depth(backbone, head, to_batch([resized], device), flip_tta=True, autocast=autocast)
        title = picture_title("Depth head", backbone, model_label, picture_name(names, i), resized)
        pictures.append(figure_image(depth_figure(resized, depth[0, 0].float().cpu().numpy(), title=title)))
    return pictures
