"""Training of a dense probe head on frozen features: AdamW under :class:`~.schedule.WarmupOneCycle`.

Only the small head receives gradients; the backbone's features come from :func:`~.features.extract_patch_features`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .loaders import cycle, train_loader
from .predict import dense_predict
from .schedule import OptimConfig, WarmupOneCycle

logger = logging.getLogger(__name__)
H = TypeVar("H", bound=nn.Module)


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
