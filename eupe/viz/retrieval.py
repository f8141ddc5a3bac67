"""k-NN retrieval grids: each query image beside its nearest gallery images by class-token cosine similarity."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps
from torch import Tensor, nn

from ..data import make_transform
from ..data.images import ImageFolderDataset, ImageRecord, collate_skipping_failures, load_image
from ..extract import require_finite

logger = logging.getLogger(__name__)


def class_token_features(
    backbone: nn.Module, records: list[ImageRecord], size: int = 224, batch_size: int = 32, num_workers: int = 0,
    device: torch.device | str = "cpu", autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[Tensor, list[int]]:
    """L2-normalised class tokens ``[N, D]`` of the decodable images, and their indices into ``records``.

    Images that cannot be decoded are skipped with a warning naming them.
    """
    dataset = ImageFolderDataset(records, make_transform(size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=collate_skipping_failures)
    features, kept = [], []
    for batch in loader:
        for index, reason in batch.failures:
            logger.warning("skipping %s: %s", records[index].path, reason)
        if batch.images is None:
            continue
        with torch.inference_mode(), (autocast or contextlib.nullcontext()):
            cls = backbone.forward_features(batch.images.to(device))["x_norm_clstoken"]
        features.append(F.normalize(cls.float(), dim=-1).cpu())
        kept.extend(batch.indices.tolist())
    if not features:
        raise ValueError("none of the images could be decoded")
    out = torch.cat(features)
    require_finite(out, "class tokens", [records[i].path for i in kept])
    return out, kept


def nearest_neighbours(
    queries: Tensor, gallery: Tensor, k: int, exclude: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine similarities and gallery indices ``[Q, k]`` of normalised features.

    ``exclude`` (``[Q, G]`` bool) removes pairs from the candidates, e.g. a query that is also in the gallery.
    """
    scores = queries @ gallery.T
    if exclude is not None:
        scores = scores.masked_fill(exclude, -float("inf"))
    available = gallery.shape[0] - (int(exclude.sum(1).max()) if exclude is not None else 0)
    if available <= 0:
        raise ValueError("the gallery has no image to retrieve besides the queries themselves")
    if k > available:
        logger.warning("retrieval: k=%d but the gallery offers %d images per query: showing %d neighbours", k,
                       available, available)
    return scores.topk(min(k, available), dim=1)


def _thumbnail(path: str, size: int, border: str = "white") -> Image.Image:
    return ImageOps.expand(ImageOps.fit(load_image(path), (size, size), Image.BICUBIC), 3, fill=border)


def wrap_text(draw: ImageDraw.ImageDraw, text: str, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (at any character: file names have no spaces), so
    that a caption shows all of it."""
    lines = [""]
    for char in text:
        if lines[-1] and draw.textlength(lines[-1] + char) > width:
            lines.append("")
        lines[-1] += char
    return lines


def retrieval_grid(
    queries: list[str], neighbours: list[list[tuple[str, float, str | None]]], thumb: int = 128,
) -> Image.Image:
    """One row per query: the query (red frame, its full file name below), then its neighbours with similarity (and
    class name if known)."""
    cell, line_height = thumb + 6, 16
    columns = 1 + max(len(row) for row in neighbours)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [[wrap_text(measure, "query: " + Path(query).name, cell - 4)]
                + [wrap_text(measure, f"{score:.3f}" + (f" {label}" if label else ""), cell - 4)
                   for _, score, label in row] for query, row in zip(queries, neighbours)]
    heights = [line_height * max(len(lines) for lines in row) for row in captions]
    canvas = Image.new("RGB", (columns * (cell + 4), sum(cell + h + 4 for h in heights)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for query, row, row_captions, caption in zip(queries, neighbours, captions, heights):
        paths = [query] + [path for path, _, _ in row]
        for c, (path, lines) in enumerate(zip(paths, row_captions)):
            canvas.paste(_thumbnail(path, thumb, border="red" if c == 0 else "white"), (c * (cell + 4), y))
            for i, line in enumerate(lines):
                draw.text((c * (cell + 4) + 2, y + cell + 2 + i * line_height), line, fill="black")
        y += cell + caption + 4
    return canvas


def retrieval_picture(
    backbone: nn.Module, queries: list[ImageRecord], gallery: list[ImageRecord], k: int = 5, size: int = 224,
    thumb: int = 128, device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> Image.Image:
    """The retrieval grid of ``queries`` against ``gallery`` (a query never retrieves its own file)."""
    q_feat, q_kept = class_token_features(backbone, queries, size, device=device, autocast=autocast)
    g_feat, g_kept = class_token_features(backbone, gallery, size, device=device, autocast=autocast)
    q_paths = [Path(queries[i].path).resolve() for i in q_kept]
    g_paths = [Path(gallery[i].path).resolve() for i in g_kept]
    exclude = torch.tensor([[qp == gp for gp in g_paths] for qp in q_paths])
    scores, indices = nearest_neighbours(q_feat, g_feat, k, exclude)
    rows = [[(gallery[g_kept[j]].path, float(s), gallery[g_kept[j]].class_name) for s, j in zip(srow, irow.tolist())]
            for srow, irow in zip(scores, indices)]
    return retrieval_grid([queries[i].path for i in q_kept], rows, thumb)
