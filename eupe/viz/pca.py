"""PCA pictures of patch features: the first three principal components of the tokens of a set of images shown as
RGB, optionally only over the foreground (tokens above a threshold of the first component).

The components are fitted jointly over the patch tokens of all given images, so colours are comparable across them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..eval.dense import extract_patch_features, feature_stride
from ..extract import require_finite
from ..extract.transforms import resize_short_side_bounded
from .charts import Panel, figure_image, panel_figure
from .images import picture_name, picture_title, to_batch

logger = logging.getLogger(__name__)


def fit_pca(tokens: Tensor, n_components: int = 3) -> tuple[Tensor, Tensor]:
    """``[N, D]`` tokens -> (mean ``[D]``, components ``[n, D]``), each component's sign fixed so that its
    largest-magnitude loading is positive (a deterministic choice)."""
    if tokens.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 tokens, got {tokens.shape[0]}")
    tokens = tokens.double()
    mean = tokens.mean(0)
    _, _, vh = torch.linalg.svd(tokens - mean, full_matrices=False)
    components = vh[:n_components]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    return mean, components * signs


def _scale(values: Tensor, reference: Tensor) -> Tensor:
    """Per-column affine map of ``values`` to [0, 1] using ``reference``'s 1st and 99th percentiles (clipped)."""
    lo, hi = torch.quantile(reference, 0.01, dim=0), torch.quantile(reference, 0.99, dim=0)
    return ((values - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)


def _border(h: int, w: int) -> Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = True, True, True, True
    return mask.flatten()


def _flat_tokens(maps: list[Tensor]) -> list[Tensor]:
    """``[D, h, w]`` feature maps -> ``[h*w, D]`` double tokens."""
    return [m.flatten(1).T.double() for m in maps]


def foreground_masks(maps: list[Tensor], threshold: float, flat: list[Tensor] | None = None) -> list[Tensor]:
    """Per image ``[h*w]`` masks: first principal component, scaled to [0, 1] over all tokens, above
    ``threshold``. The component's sign is chosen so that image-border tokens (mostly background) score low.
    ``flat`` are the maps' tokens as :func:`_flat_tokens` gives them, when the caller already has them."""
    flat = _flat_tokens(maps) if flat is None else flat
    mean, pc = fit_pca(torch.cat(flat), 1)
    scores = [(f - mean) @ pc[0] for f in flat]
    border = torch.cat([s[_border(*m.shape[-2:])] for s, m in zip(scores, maps)])
    if border.mean() > torch.cat(scores).mean():
        scores = [-s for s in scores]
    everything = torch.cat(scores)
    lo, hi = everything.min(), everything.max()
    return [((s - lo) / (hi - lo).clamp(min=1e-12)) > threshold for s in scores]


def pca_rgb(maps: list[Tensor], foreground_threshold: float | None = None) -> list[np.ndarray]:
    """``[D, h, w]`` feature maps -> ``[h, w, 3]`` uint8 pictures of their first three principal components.

    With ``foreground_threshold`` the components are fitted on the foreground tokens only and the background is
    black.
    """
    flat = _flat_tokens(maps)
    masks = (foreground_masks(maps, foreground_threshold, flat) if foreground_threshold is not None
             else [torch.ones(len(f), dtype=torch.bool) for f in flat])
    fitted = torch.cat([f[m] for f, m in zip(flat, masks)])
    if len(fitted) < 3:
        raise ValueError(f"only {len(fitted)} foreground tokens; lower the foreground threshold")
    mean, components = fit_pca(fitted, 3)
    reference = (fitted - mean) @ components.T
    pictures = []
    for f, mask, m in zip(flat, masks, maps):
        rgb = _scale((f - mean) @ components.T, reference) * mask[:, None]
        pictures.append((rgb.reshape(*m.shape[-2:], 3).numpy() * 255).round().astype(np.uint8))
    return pictures


def pca_figure(image: Image.Image, pca: np.ndarray, *, title: str,
               foreground_threshold: float | None = None) -> Any:
    """The image beside its PCA picture (``[h, w, 3]`` uint8 at the token grid, shown at the image size)."""
    shown = Image.fromarray(pca).resize(image.size, Image.NEAREST)
    pca_title = "PCA components 1-3 as RGB"
    if foreground_threshold is not None:
        pca_title += f"\nforeground: component 1 > {foreground_threshold:g}"
    return panel_figure([Panel(image, "input"), Panel(shown, pca_title)], title=title)


def pca_pictures(
    backbone: nn.Module, images: list[Image.Image], size: int = 448, foreground_threshold: float | None = None,
    device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None,
    names: Sequence[str] | None = None, model_label: str | None = None,
) -> list[Image.Image]:
    """For each image: the (resized) image beside its PCA picture, titled with ``model_label`` (default: the
    backbone's class name), the image's name and the size it was run at.

    Images are resized to short side ``size`` with the long side bounded (:func:`resize_short_side_bounded`, which
    logs what it did to an extreme aspect ratio, naming the image by ``names``)."""
    stride = feature_stride(backbone)
    resized = [resize_short_side_bounded(image, size, multiple=stride, name=picture_name(names, i))
               for i, image in enumerate(images)]
    maps = [extract_patch_features(backbone, to_batch([image], device), autocast)[0].cpu() for image in resized]
    for i, features in enumerate(maps):
        require_finite(features[None], f"patch features of {picture_name(names, i)}")
    return [figure_image(pca_figure(image, picture, foreground_threshold=foreground_threshold,
                                    title=picture_title("PCA of patch features", backbone, model_label,
                                                        picture_name(names, i), image)))
            for i, (image, picture) in enumerate(zip(resized, pca_rgb(maps, foreground_threshold)))]
