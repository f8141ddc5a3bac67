"""The ADE20K linear segmentation protocol (paper Appendix C.3, reference linear config): a BatchNorm + 1x1 linear
head on frozen last-layer patch tokens, trained with cross-entropy, evaluated with sliding windows by mIoU."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.workers import workers_field
from ..backbone import EvalBackbone
from ..dense.data import require_data_root
from ..dense.head import LinearProbeHead
from ..dense.head_file import load_head, save_head
from ..dense.loaders import evaluation_batches
from ..dense.predict import dense_predict, resize_like, sliding_window
from ..dense.schedule import OptimConfig, optim_rules
from ..dense.train import train_probe_head
from ..results import write_run_outputs
from ..settings import check_settings, non_negative, positive, probability
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
    num_workers: int = workers_field(8)  # at most the CPUs this process may use
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
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)


def check_segmentation_config(cfg: SegmentationConfig) -> None:
    """Refuses settings outside their range (a zero batch, a negative rate...), naming each."""
    t, e = cfg.train, cfg.eval
    check_settings("eval segmentation", [
        positive("data.num_classes", cfg.data.num_classes), positive("train.iterations", t.iterations),
        positive("train.batch_size", t.batch_size), positive("train.img_size", t.img_size),
        positive("train.crop_size", t.crop_size), probability("train.flip_prob", t.flip_prob),
        ("train.scale_range", t.scale_range, len(t.scale_range) == 2 and 0 < t.scale_range[0] <= t.scale_range[1],
         "must be [low, high] with 0 < low <= high"),
        ("train.cat_max_ratio", t.cat_max_ratio, 0 < t.cat_max_ratio <= 1, "must be in (0, 1]"),
        ("train.dropout", t.dropout, 0 <= t.dropout < 1, "must be in [0, 1)"),
        positive("eval.img_size", e.img_size), positive("eval.crop_size", e.crop_size),
        positive("eval.stride", e.stride), *optim_rules(cfg.optim),
        *[non_negative(f"data.{k}", v) for k, v in (("max_train_images", cfg.data.max_train_images),
                                                     ("max_val_images", cfg.data.max_val_images)) if v is not None],
    ])


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
    return train_probe_head(
        backbone, lambda: LinearProbeHead(backbone.embed_dim, cfg.data.num_classes, t.dropout), dataset,
        lambda logits, labels: F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX), cfg.optim,
        iterations=t.iterations, batch_size=t.batch_size, num_workers=cfg.data.num_workers, seed=t.seed,
        device=device, autocast=autocast, desc="segmentation head",
    )


@torch.inference_mode()
def evaluate_segmentation(
    backbone: nn.Module, head: nn.Module, cfg: SegmentationConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, Any]:
    """Sliding-window mIoU on the validation split, logits resized (bilinear) to each label's original size."""
    samples = _subset(list_ade20k(cfg.data.root, cfg.data.val_split), cfg.data.max_val_images)
    dataset = SegmentationDataset(samples, EvalResize(cfg.eval.img_size), cfg.data.num_classes,
                                  cfg.data.reduce_zero_label)
    confusion = ConfusionMatrix(cfg.data.num_classes, IGNORE_INDEX)
    head.eval()
    for image, label in evaluation_batches(dataset, cfg.data.num_workers, "segmentation eval"):
        logits = resize_like(predict_segmentation(backbone, head, image.to(device), cfg.eval, autocast), label)
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


def load_segmentation_head(path: str | Path, *, width: int | None = None, identity: dict[str, Any] | None = None
                           ) -> tuple[LinearProbeHead, dict[str, Any]]:
    """Rebuilds a head saved by :func:`run_segmentation` (meta holds its sizes and eval settings); given the
    backbone's ``width`` and ``identity``, refuses a head trained on another backbone."""
    return load_head(path, TASK, lambda meta: LinearProbeHead(meta["in_dim"], meta["num_classes"]), width=width,
                     identity=identity)


def run_segmentation(backbone: EvalBackbone, config: SegmentationConfig, output_dir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and writes ``config.yaml``, ``head.pt``, ``results.json`` and ``results.csv``."""
    check_segmentation_config(config)
    require_data_root(config.data.root, "the ADEChallengeData2016 folder")
    model, device, autocast, name = backbone.load(), backbone.device, backbone.autocast, backbone.name
    head, stats = train_segmentation_head(model, config, device, autocast)
    save_head(Path(output_dir) / "head.pt", head, task=TASK, meta={
        "in_dim": head.in_dim, "num_classes": head.out_channels, "model": name, "backbone": backbone.identity(),
        "eval": asdict(config.eval),
    })
    metrics = evaluate_segmentation(model, head, config, device, autocast)
    results = {"model": name, "backbone": backbone.identity(), "protocol": "ade20k_linear", **stats, **metrics}
    table = [{"class": i, "IoU": iou, "Acc": acc} for i, (iou, acc) in enumerate(zip(metrics["IoU"], metrics["Acc"]))]
    summary = (f"segmentation {name}: mIoU {metrics['mIoU']:.2f} aAcc {metrics['aAcc']:.2f} "
               f"({metrics['num_images']} images, {config.train.iterations} its)")
    write_run_outputs(output_dir, config=config, results=results, summary=summary, table=table)
    return results
