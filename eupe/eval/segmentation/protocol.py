"""The ADE20K linear segmentation protocol (paper Appendix C.3, reference linear config): a BatchNorm + 1x1 linear
head on frozen last-layer patch tokens, trained with cross-entropy, evaluated with sliding windows by mIoU."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..dense import (
    LinearProbeHead,
    OptimConfig,
    cycle,
    dense_predict,
    load_head_file,
    save_head,
    sliding_window,
    train_head,
    train_loader,
)
from ..results import write_run_outputs
from .data import ADE20K_CLASSES, IGNORE_INDEX, SegmentationDataset, list_ade20k
from .metrics import ConfusionMatrix
from .transforms import EvalResize, TrainAugment

logger = logging.getLogger(__name__)
TASK = "segmentation"


@dataclass
class SegDataConfig:
    root: str = ""
    train_split: str = "training"
    val_split: str = "validation"
    num_classes: int = ADE20K_CLASSES
    reduce_zero_label: bool = True
    num_workers: int = 8
    # Use only the first N images of a split (null: all); for quick checks.
    max_train_images: int | None = None
    max_val_images: int | None = None


@dataclass
class SegTrainConfig:
    iterations: int = 40000
    batch_size: int = 16
    img_size: int = 512
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: int = 512
    flip_prob: float = 0.5
    cat_max_ratio: float = 0.75
    photometric: bool = True
    dropout: float = 0.0
    seed: int = 0


@dataclass
class SegEvalConfig:
    img_size: int = 512
    crop_size: int = 512
    stride: int = 341


@dataclass
class SegmentationConfig:
    data: SegDataConfig = field(default_factory=SegDataConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-3, betas=[0.9, 0.999],
                                                                    warmup_iters=1500, warmup_ratio=1e-6))
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)


def _subset(samples: list, limit: int | None) -> list:
    return samples if limit is None else samples[:limit]


def train_segmentation_head(
    backbone: nn.Module, cfg: SegmentationConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[LinearProbeHead, dict[str, float]]:
    """Trains the linear head on the training split; returns (head in eval mode, training stats)."""
    t = cfg.train
    samples = _subset(list_ade20k(cfg.data.root, cfg.data.train_split), cfg.data.max_train_images)
    augment = TrainAugment(t.img_size, t.crop_size, tuple(t.scale_range), t.flip_prob, t.cat_max_ratio,
                           t.photometric)
    dataset = SegmentationDataset(samples, augment, cfg.data.num_classes, cfg.data.reduce_zero_label)
    loader = train_loader(dataset, t.batch_size, cfg.data.num_workers, t.seed, device)
    head = LinearProbeHead(backbone.embed_dim, cfg.data.num_classes, t.dropout).to(device)

    def loss_fn(head: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = (x.to(device, non_blocking=True) for x in batch)
        logits = dense_predict(backbone, head, images, autocast)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)

    stats = train_head(head, cycle(loader), loss_fn, cfg.optim, t.iterations, desc="segmentation head")
    return head, stats


@torch.inference_mode()
def evaluate_segmentation(
    backbone: nn.Module, head: nn.Module, cfg: SegmentationConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, Any]:
    """Sliding-window mIoU on the validation split, logits resized (bilinear) to each label's original size."""
    samples = _subset(list_ade20k(cfg.data.root, cfg.data.val_split), cfg.data.max_val_images)
    dataset = SegmentationDataset(samples, EvalResize(cfg.eval.img_size), cfg.data.num_classes,
                                  cfg.data.reduce_zero_label)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=cfg.data.num_workers)
    confusion = ConfusionMatrix(cfg.data.num_classes, IGNORE_INDEX)
    head.eval()
    for image, label in tqdm(loader, desc="segmentation eval", dynamic_ncols=True, mininterval=1.0):
        logits = predict_segmentation(backbone, head, image.to(device), cfg.eval, autocast)
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        confusion.update(logits.argmax(1).cpu(), label)
    metrics = confusion.compute()
    metrics["num_images"] = len(dataset)
    return metrics


def predict_segmentation(
    backbone: nn.Module, head: nn.Module, image: torch.Tensor, cfg: SegEvalConfig,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Class logits ``[B, C, H, W]`` of a normalised image batch, by sliding windows."""
    return sliding_window(lambda crop: dense_predict(backbone, head, crop, autocast), image,
                          cfg.crop_size, cfg.stride, head.out_channels)


def load_segmentation_head(path: str | Path) -> tuple[LinearProbeHead, dict[str, Any]]:
    """Rebuilds a head saved by :func:`run_segmentation` (meta holds its sizes and eval settings)."""
    state, meta = load_head_file(path, TASK)
    head = LinearProbeHead(meta["in_dim"], meta["num_classes"])
    head.load_state_dict(state)
    return head.eval(), meta


def run_segmentation(
    backbone: nn.Module, cfg: SegmentationConfig, output_dir: str | Path, *, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None, model_name: str = "",
) -> dict[str, Any]:
    """Trains, evaluates and writes ``config.yaml``, ``head.pt``, ``results.json`` and ``results.csv``."""
    if not cfg.data.root:
        raise ValueError("no dataset root: pass --data-root or set data.root=PATH (the ADEChallengeData2016 folder)")
    head, stats = train_segmentation_head(backbone, cfg, device, autocast)
    save_head(Path(output_dir) / "head.pt", head, task=TASK, meta={
        "in_dim": head.in_dim, "num_classes": head.out_channels, "model": model_name,
        "eval": {"img_size": cfg.eval.img_size, "crop_size": cfg.eval.crop_size, "stride": cfg.eval.stride},
    })
    metrics = evaluate_segmentation(backbone, head, cfg, device, autocast)
    results = {"model": model_name, "protocol": "ade20k_linear", **stats, **metrics}
    table = [{"class": i, "IoU": iou, "Acc": acc} for i, (iou, acc) in enumerate(zip(metrics["IoU"], metrics["Acc"]))]
    summary = (f"segmentation {model_name}: mIoU {metrics['mIoU']:.2f} aAcc {metrics['aAcc']:.2f} "
               f"({metrics['num_images']} images, {cfg.train.iterations} its)")
    write_run_outputs(output_dir, config=cfg, results=results, summary=summary, table=table)
    return results
