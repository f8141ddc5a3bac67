"""The NYUv2 linear depth protocol (paper Appendix C.4, reference NYU config): a BatchNorm + linear head over 256
depth bins on frozen last-layer patch tokens, trained with SigLoss, evaluated with the Eigen crop and flip TTA."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...utils.workers import workers_field
from ..backbone import EvalBackbone
from ..dense.data import require_data_root
from ..dense.head_file import load_head, save_head
from ..dense.loaders import evaluation_batches
from ..dense.predict import dense_predict, resize_like
from ..dense.schedule import OptimConfig, optim_rules
from ..dense.train import train_probe_head
from ..results import write_run_outputs
from ..settings import check_settings, non_negative, positive, probability
from .data import DepthDataset, read_split_list
from .head import BinStrategy, DepthHead, NormStrategy, SigLoss
from .metrics import DepthMetricAverager, depth_metrics, eigen_mask
from .transforms import TrainAugment, eval_transform

logger = logging.getLogger(__name__)
TASK = "depth"


@dataclass
class DepthDataConfig:
    root: str = ""
    # List files (relative to root unless absolute) and the folders their paths are relative to (BTS layout).
    train_list: str = "nyudepthv2_train_files_with_gt.txt"
    test_list: str = "nyudepthv2_test_files_with_gt.txt"
    train_dir: str = "sync"
    test_dir: str = "official_splits/test"
    depth_scale: float = 1000.0
    num_workers: int = workers_field(8)  # at most the CPUs this process may use
    max_train_images: int | None = None
    max_test_images: int | None = None


@dataclass
class DepthHeadConfig:
    n_bins: int = 256
    min_depth: float = 0.001
    max_depth: float = 10.0
    bin_strategy: BinStrategy = "linear"
    norm_strategy: NormStrategy = "linear"


@dataclass
class DepthTrainConfig:
    iterations: int = 38400
    batch_size: int = 16
    crop_size: list[int] = field(default_factory=lambda: [416, 544])
    border_crop: list[int] | None = field(default_factory=lambda: [43, 45, 608, 472])
    rotation: float = 2.5
    flip_prob: float = 0.5
    color_prob: float = 0.5
    brightness: list[float] = field(default_factory=lambda: [0.75, 1.25])
    gamma: list[float] = field(default_factory=lambda: [0.9, 1.1])
    color: list[float] = field(default_factory=lambda: [0.9, 1.1])
    loss_warmup_iters: int = 100
    seed: int = 0


@dataclass
class DepthEvalConfig:
    eigen_crop: bool = True
    flip_tta: bool = True


@dataclass
class DepthConfig:
    data: DepthDataConfig = field(default_factory=DepthDataConfig)
    head: DepthHeadConfig = field(default_factory=DepthHeadConfig)
    train: DepthTrainConfig = field(default_factory=DepthTrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=3e-4, weight_decay=1e-3, betas=[0.9, 0.99], warmup_iters=12800, warmup_ratio=1e-3,
        final_div_factor=1000.0, momentum=[0.85, 0.95], grad_clip=35.0))
    eval: DepthEvalConfig = field(default_factory=DepthEvalConfig)


def check_depth_config(cfg: DepthConfig) -> None:
    """Refuses settings outside their range (a zero batch, an empty depth range...), naming each."""
    t, h = cfg.train, cfg.head
    check_settings("eval depth", [
        positive("data.depth_scale", cfg.data.depth_scale), positive("head.n_bins", h.n_bins),
        positive("head.min_depth", h.min_depth),
        ("head.max_depth", h.max_depth, h.max_depth > h.min_depth, f"must exceed head.min_depth={h.min_depth}"),
        positive("train.iterations", t.iterations), positive("train.batch_size", t.batch_size),
        ("train.crop_size", t.crop_size, len(t.crop_size) == 2 and min(t.crop_size) > 0,
         "must be [height, width], both positive"),
        ("train.border_crop", t.border_crop, t.border_crop is None or len(t.border_crop) == 4,
         "must be [x1, y1, x2, y2] or null"),
        non_negative("train.rotation", t.rotation), probability("train.flip_prob", t.flip_prob),
        probability("train.color_prob", t.color_prob), non_negative("train.loss_warmup_iters", t.loss_warmup_iters),
        *optim_rules(cfg.optim),
        *[non_negative(f"data.{k}", v) for k, v in (("max_train_images", cfg.data.max_train_images),
                                                     ("max_test_images", cfg.data.max_test_images)) if v is not None],
    ])


def _split(cfg: DepthDataConfig, train: bool) -> list:
    root = Path(cfg.root)
    list_file = root / (cfg.train_list if train else cfg.test_list)
    samples = read_split_list(list_file, root / (cfg.train_dir if train else cfg.test_dir))
    limit = cfg.max_train_images if train else cfg.max_test_images
    return samples if limit is None else samples[:limit]


def valid_mask(depth: torch.Tensor, head: DepthHeadConfig) -> torch.Tensor:
    """Pixels with a measured depth strictly inside (min_depth, max_depth)."""
    return (depth > head.min_depth) & (depth < head.max_depth)


def train_depth_head(
    backbone: nn.Module, cfg: DepthConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[DepthHead, dict[str, float]]:
    """Trains the depth head on the training list; returns (head in eval mode, training stats)."""
    t, h = cfg.train, cfg.head
    augment = TrainAugment(tuple(t.crop_size), tuple(t.border_crop) if t.border_crop else None, t.rotation,
                           t.flip_prob, t.color_prob, tuple(t.brightness), tuple(t.gamma), tuple(t.color))
    dataset = DepthDataset(_split(cfg.data, train=True), augment, cfg.data.depth_scale)
    sigloss = SigLoss(warmup_iters=t.loss_warmup_iters)
    return train_probe_head(
        backbone,
        lambda: DepthHead(backbone.embed_dim, h.n_bins, h.min_depth, h.max_depth, h.bin_strategy, h.norm_strategy),
        dataset, lambda pred, depth: sigloss(pred, depth, valid_mask(depth, h)), cfg.optim,
        iterations=t.iterations, batch_size=t.batch_size, num_workers=cfg.data.num_workers, seed=t.seed,
        device=device, autocast=autocast, desc="depth head",
    )


def predict_depth(backbone: nn.Module, head: nn.Module, images: torch.Tensor, flip_tta: bool = True,
                  autocast: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """Depth ``[B, 1, H, W]`` in metres at the input size; with ``flip_tta`` averaged with the flipped image's."""
    depth = dense_predict(backbone, head, images, autocast)
    if flip_tta:
        depth = (depth + dense_predict(backbone, head, images.flip(-1), autocast).flip(-1)) / 2
    return depth


@torch.inference_mode()
def evaluate_depth(
    backbone: nn.Module, head: DepthHead, cfg: DepthConfig, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, Any]:
    """Per-image metrics on the test list (Eigen crop, valid depth range), averaged over images."""
    dataset = DepthDataset(_split(cfg.data, train=False), eval_transform, cfg.data.depth_scale)
    averager, skipped = DepthMetricAverager(), 0
    head.eval()
    for image, gt in evaluation_batches(dataset, cfg.data.num_workers, "depth eval"):
        pred = predict_depth(backbone, head, image.to(device), cfg.eval.flip_tta, autocast).cpu()
        pred = resize_like(pred, gt).clamp(cfg.head.min_depth, cfg.head.max_depth)
        mask = valid_mask(gt, cfg.head)
        if cfg.eval.eigen_crop:
            mask &= eigen_mask(*gt.shape[-2:])
        if not mask.any():
            skipped += 1
            continue
        averager.update(depth_metrics(pred[mask], gt[mask]))
    if skipped:
        logger.warning("depth eval: %d test images had no valid depth inside the evaluation mask", skipped)
    return {**averager.compute(), "num_images": averager.count, "skipped_images": skipped}


def load_depth_head(path: str | Path, *, width: int | None = None, identity: dict[str, Any] | None = None
                    ) -> tuple[DepthHead, dict[str, Any]]:
    """Rebuilds a head saved by :func:`run_depth`; given the backbone's ``width`` and ``identity``, refuses a head
    trained on another backbone."""
    return load_head(path, TASK, lambda meta: DepthHead(meta["in_dim"], **meta["head"]), width=width,
                     identity=identity)


def run_depth(backbone: EvalBackbone, config: DepthConfig, output_dir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and writes ``config.yaml``, ``head.pt`` and ``results.json``."""
    check_depth_config(config)
    require_data_root(config.data.root, "the BTS NYU folder")
    model, device, autocast, name = backbone.load(), backbone.device, backbone.autocast, backbone.name
    head, stats = train_depth_head(model, config, device, autocast)
    save_head(Path(output_dir) / "head.pt", head, task=TASK,
              meta={"in_dim": head.in_dim, "model": name, "backbone": backbone.identity(), "head": asdict(config.head)})
    metrics = evaluate_depth(model, head, config, device, autocast)
    results = {"model": name, "backbone": backbone.identity(), "protocol": "nyuv2_linear", **stats, **metrics}
    summary = (f"depth {name}: RMSE {metrics['rmse']:.4f} AbsRel {metrics['abs_rel']:.4f} "
               f"d1 {metrics['delta1']:.4f} ({metrics['num_images']} images, {config.train.iterations} its)")
    write_run_outputs(output_dir, config=config, results=results, summary=summary)
    return results
