"""Shared machinery of the dense linear probes (segmentation, depth): (image, per-pixel target) datasets, frozen patch
features, the BatchNorm + 1x1 linear head, the warm-up + one-cycle schedule, the head training loop, sliding-window
inference, the evaluation loop and head files.

The backbone is never trained: its last-layer patch tokens (after the backbone norm, as the paper's protocols
specify) are computed under ``inference_mode`` and only the small head receives gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ..data.images import load_image
from ..data.transforms import normalize_imagenet, to_unit_tensor
from ..utils.io import atomic_torch_save
from ..utils.schedule import set_lr, warmup_cosine

logger = logging.getLogger(__name__)



class ImageSample(Protocol):
    """A dataset sample with the path of its RGB image."""

    @property
    def image(self) -> Path: ...


S = TypeVar("S", bound=ImageSample)
T = TypeVar("T")
H = TypeVar("H", bound=nn.Module)


class ImageTargetDataset(torch.utils.data.Dataset, Generic[S, T]):
    """Decoded (RGB image, per-pixel target array) pairs of the same size, passed through ``transform``.

    Subclasses read a sample's target (:meth:`read_target`) and word the error for a target whose size is not the
    image's (:meth:`size_mismatch`).
    """

    def __init__(self, samples: list[S], transform: Callable[[Image.Image, np.ndarray], T]) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def read_target(self, sample: S) -> np.ndarray:
        raise NotImplementedError

    def size_mismatch(self, sample: S, target: np.ndarray, image: Image.Image) -> Exception:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        sample = self.samples[index]
        image = load_image(sample.image)
        target = self.read_target(sample)
        if target.shape != (image.height, image.width):
            raise self.size_mismatch(sample, target, image)
        return image, target

    def __getitem__(self, index: int) -> T:
        return self.transform(*self.load(index))


def image_to_tensor(image: Image.Image | np.ndarray) -> Tensor:
    """RGB PIL image or ``HxWx3`` uint8 array -> ImageNet-normalised ``3 x H x W`` float tensor (no resizing)."""
    return normalize_imagenet(to_unit_tensor(image))


def feature_stride(backbone: nn.Module) -> int:
    """Pixels per token of the maps ``get_intermediate_layers(reshape=True)`` returns: the patch size where the
    model has one (ViT; a ConvNeXt built with ``patch_size`` resizes its maps to that grid), else its stride."""
    return int(getattr(backbone, "patch_size", None) or backbone.feature_stride)


def extract_patch_features(
    backbone: nn.Module, images: Tensor, autocast: contextlib.AbstractContextManager | None = None
) -> Tensor:
    """Last-layer patch tokens after the backbone norm, as a float32 ``[B, D, h, w]`` map.

    Runs under ``inference_mode`` (no graph, no saved activations); the result is copied out of inference mode so
    that a trainable head may use it as an ordinary input.
    """
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        features = backbone.get_intermediate_layers(images, n=1, reshape=True, norm=True)[0]
    return features.float().clone()


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pads ``[B, C, H, W]`` at the bottom/right to multiples of ``multiple``; returns (padded, (H, W))."""
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return (F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images), (h, w)


class LinearProbeHead(nn.Module):
    """BatchNorm over the feature channels, then a 1x1 convolution: one linear map per token."""

    def __init__(self, in_dim: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.out_channels = in_dim, out_channels
        self.norm = nn.BatchNorm2d(in_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_dim, out_channels, kernel_size=1)
        nn.init.normal_(self.conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.conv(self.dropout(self.norm(features)))


def dense_predict(
    backbone: nn.Module,
    head: nn.Module,
    images: Tensor,
    autocast: contextlib.AbstractContextManager | None = None,
) -> Tensor:
    """Head outputs (logits, or a depth map) upsampled bilinearly to the input size, for inputs of any size.

    The input is zero-padded to a multiple of the backbone stride so every pixel is covered by a token, and the
    upsampled output is cropped back to the input's size.
    """
    padded, (h, w) = pad_to_multiple(images, feature_stride(backbone))
    logits = head(extract_patch_features(backbone, padded, autocast))
    logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    return logits[..., :h, :w]


def sliding_window(predict: Callable[[Tensor], Tensor], image: Tensor, crop: int, stride: int, channels: int) -> Tensor:
    """Averages ``predict`` over overlapping ``crop`` x ``crop`` windows placed every ``stride`` pixels.

    ``predict`` maps a ``[B, C, h, w]`` window to ``[B, channels, h, w]``. Windows at the border are shifted inside
    the image (never padded); a side shorter than ``crop`` is covered by one window of that side's length.
    """
    if stride <= 0 or crop <= 0:
        raise ValueError(f"sliding window needs positive crop and stride, got crop={crop} stride={stride}")
    b, _, h, w = image.shape
    out = image.new_zeros((b, channels, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out[:, :, y1:y2, x1:x2] += predict(image[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


@dataclass
class OptimConfig:
    """AdamW and the warm-up + one-cycle schedule of the reference's dense probes."""

    lr: float = 1e-3
    weight_decay: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    # Warm-up starts at lr * warmup_ratio and rises linearly to lr.
    warmup_ratio: float = 1e-6
    # After warm-up the LR follows a cosine from lr down to lr / final_div_factor (inf: down to 0).
    final_div_factor: float = math.inf
    # [base, max] of AdamW's beta1 for one-cycle momentum (max -> base in warm-up, base -> max after); null: fixed.
    momentum: list[float] | None = None
    grad_clip: float | None = None


class WarmupOneCycle:
    """Per-iteration LR (and optionally beta1): linear warm-up to the peak, then cosine annealing."""

    def __init__(self, cfg: OptimConfig, total_iters: int) -> None:
        if total_iters <= 0:
            raise ValueError(f"total iterations must be positive, got {total_iters}")
        self.cfg, self.total = cfg, total_iters

    def lr(self, step: int) -> float:
        cfg = self.cfg
        return warmup_cosine(step, self.total, cfg.lr, cfg.warmup_iters, warmup_start=cfg.lr * cfg.warmup_ratio,
                             end=cfg.lr / cfg.final_div_factor)

    def beta1(self, step: int) -> float | None:
        """One-cycle momentum: max -> base during warm-up, base -> max after (the mirror image of the LR)."""
        if self.cfg.momentum is None:
            return None
        base, top = self.cfg.momentum
        return warmup_cosine(step, self.total, base, self.cfg.warmup_iters, warmup_start=top, end=top)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        set_lr(optimizer, lr, self.beta1(step))
        return lr


def train_loader(
    dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, seed: int, device: torch.device
) -> torch.utils.data.DataLoader:
    """Shuffled, seeded training loader (Python/NumPy/torch RNGs seeded, each worker reseeded from its torch seed)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
        num_workers=num_workers, generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
        persistent_workers=num_workers > 0, pin_memory=device.type == "cuda",
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def cycle(loader: Iterable) -> Iterator:
    """Endless iteration over a loader, re-shuffling at every pass."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the training data loader yielded no batch (is the training split empty?)")


def train_head(
    head: nn.Module,
    batches: Iterator[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    cfg: OptimConfig,
    iterations: int,
    *,
    desc: str = "train",
    log_every: int = 100,
) -> dict[str, float]:
    """Trains ``head`` for ``iterations`` steps of AdamW under :class:`WarmupOneCycle`.

    ``loss_fn(head, batch)`` returns the scalar loss of one batch (it extracts the frozen features itself). Only the
    last 50 loss values (floats) are kept between steps. Returns ``{"final_loss": their mean, "final_lr": ...}``.
    """
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    schedule = WarmupOneCycle(cfg, iterations)
    head.train()
    recent: deque[float] = deque(maxlen=50)  # the last losses only, for the progress bar and the summary
    lr = cfg.lr
    progress = tqdm(range(iterations), desc=desc, dynamic_ncols=True, mininterval=1.0)
    for step in progress:
        lr = schedule.apply(optimizer, step)
        loss = loss_fn(head, next(batches))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{desc}: loss became {loss.item()} at iteration {step}; lower the LR (optim.lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        recent.append(loss.item())
        progress.set_postfix(loss=f"{recent[-1]:.4f}", lr=f"{lr:.2e}", refresh=False)
        if log_every and (step + 1) % log_every == 0:
            logger.info("%s it %d/%d loss %.4f lr %.3e", desc, step + 1, iterations, sum(recent) / len(recent), lr)
    head.eval()
    return {"final_loss": sum(recent) / len(recent), "final_lr": lr}


def train_probe_head(
    backbone: nn.Module,
    build_head: Callable[[], H],
    dataset: torch.utils.data.Dataset,
    criterion: Callable[[Tensor, Tensor], Tensor],
    cfg: OptimConfig,
    *,
    iterations: int,
    batch_size: int,
    num_workers: int,
    seed: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    desc: str = "train",
) -> tuple[H, dict[str, float]]:
    """Builds a head once the RNGs are seeded (so its init depends on ``seed`` only) and trains it with
    :func:`train_head` on ``dataset``'s (image, target) batches over the frozen ``backbone``; ``criterion(prediction,
    target)`` scores the head's output upsampled to the image size. Returns (head in eval mode, training stats)."""
    loader = train_loader(dataset, batch_size, num_workers, seed, device)
    head = build_head().to(device)

    def loss_fn(head: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, target = (x.to(device, non_blocking=True) for x in batch)
        return criterion(dense_predict(backbone, head, images, autocast), target)

    return head, train_head(head, cycle(loader), loss_fn, cfg, iterations, desc=desc)


def evaluation_batches(dataset: torch.utils.data.Dataset, num_workers: int, desc: str) -> Iterable[Any]:
    """The evaluation items one at a time (batches of one, in order), with a progress bar."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=num_workers)
    return tqdm(loader, desc=desc, dynamic_ncols=True, mininterval=1.0)


def resize_like(prediction: Tensor, target: Tensor) -> Tensor:
    """``prediction`` ``[B, C, h, w]`` resized bilinearly to the spatial size of ``target``."""
    return F.interpolate(prediction, size=target.shape[-2:], mode="bilinear", align_corners=False)


def save_head(path: str | Path, head: nn.Module, *, task: str, meta: dict[str, Any]) -> None:
    """Writes the head's weights with what is needed to rebuild it (``task`` and constructor ``meta``)."""
    state = {f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}
    atomic_torch_save({"task": task, "meta": meta, "state_dict": state}, path)


def load_head_file(path: str | Path, task: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a head file written by :func:`save_head`; returns (head state dict, meta).

    Raises ``ValueError`` naming the file if it holds another task's head or is not a head file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head checkpoint {path} does not exist (it is written by `eupe eval {task}`)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob or "task" not in blob:
        raise ValueError(f"{path} is not a head checkpoint written by `eupe eval {task}`")
    if blob["task"] != task:
        raise ValueError(f"{path} holds a {blob['task']!r} head, but a {task!r} head is needed")
    state = {k.removeprefix("head."): v for k, v in blob["state_dict"].items()}
    return state, dict(blob["meta"])


def load_head(path: str | Path, task: str, build: Callable[[dict[str, Any]], H]) -> tuple[H, dict[str, Any]]:
    """Rebuilds a head saved by :func:`save_head`: ``build(meta)`` makes it, the file's weights fill it; returns
    (head in eval mode, meta)."""
    state, meta = load_head_file(path, task)
    head = build(meta)
    head.load_state_dict(state)
    return head.eval(), meta


def require_data_root(root: str | None, expected: str | None = None, *, key: str | None = "data.root",
                      must_exist: bool = False) -> None:
    """Raises when no dataset root is configured (``ValueError``) or, with ``must_exist``, when it is not a folder
    (``FileNotFoundError``). ``expected`` describes the folder wanted and ``key`` names the config entry holding
    the root (``None`` when the caller does not know it: the message then points at ``--config`` / ``--set``)."""
    if not root:
        how = f"pass --data-root or set {key}=PATH" if key else "pass --data-root DIR (or set it in --config / --set)"
        raise ValueError(f"no dataset root: {how}" + (f" ({expected})" if expected else ""))
    if must_exist and not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")


__all__ = [
    "ImageTargetDataset",
    "LinearProbeHead",
    "OptimConfig",
    "WarmupOneCycle",
    "cycle",
    "dense_predict",
    "evaluation_batches",
    "extract_patch_features",
    "feature_stride",
    "image_to_tensor",
    "load_head",
    "load_head_file",
    "pad_to_multiple",
    "require_data_root",
    "resize_like",
    "save_head",
    "sliding_window",
    "train_head",
    "train_loader",
    "train_probe_head",
]
