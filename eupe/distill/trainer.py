"""One training loop for all three EUPE stages.

Stage 1 (several teachers -> proxy), stage 2 (proxy -> student at one scale) and stage 3 (proxy -> student,
each side drawing a scale per iteration) differ only in their config: the teachers, the student, the scales and
the hyper-parameters. Each iteration: render this rank's slice of the global batch of augmented views, get the
teachers' outputs (live, or from the feature cache), standardise them with the frozen statistics, run the
student and its heads under bf16 autocast, and take an AdamW step with a warm-up + cosine LR, gradient
accumulation and clipping. Checkpoints are atomic and a restarted run resumes from the newest one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..config import save_config, to_dict
from ..models import create_model
from ..teachers import Teacher, TeacherOutput, build_teachers
from ..teachers.common import check_output
from ..utils.device import autocast
from ..utils.io import atomic_write_json
from ..utils.optional import available, install_hint
from ..utils.schedule import scaled_lr, set_lr, warmup_cosine
from .cache import CachedViews, FeatureCache
from .checkpoint import (
    export_student,
    gather_state,
    list_checkpoints,
    load_latest,
    load_student_init,
    restore,
    rng_state,
    save_checkpoint,
)
from .config import DistillConfig
from .data import ViewSource, ViewStream, mix_seed
from .distributed import DistEnv, all_reduce_mean, init_distributed, wrap_model
from .loss import distillation_loss
from .monitor import MetricsLogger, plot_losses, read_metrics
from .normalization import TeacherNormalizer
from .student import DistillStudent

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stops and its last good checkpoint is kept."""


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    export_path: Path | None = None
    norms_path: Path | None = None
    final_loss: float = math.nan
    skipped_images: int = 0


def resize(images: Tensor, size: int) -> Tensor:
    """Square bicubic (antialiased) resize of [0, 1] crops, clamped back to [0, 1]."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, LayerScale and tokens (1-d tensors and *_token parameters)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("token") or "tokens" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Distiller:
    """Holds the run's pieces; :meth:`run` trains to ``train.iterations`` (resuming if a checkpoint exists)."""

    def __init__(self, cfg: DistillConfig, *, teachers: Sequence[Teacher] | None = None,
                 primary: ViewSource | None = None, second: ViewSource | None = None, data_id: str = "") -> None:
        """``teachers``/``primary``/``second`` replace the ones the config names (tests, the demo); ``data_id``
        identifies such in-memory data in the feature-cache fingerprint."""
        self.cfg = cfg
        self.data_id = data_id
        self.env: DistEnv = init_distributed(cfg.train.device)
        self.out = Path(cfg.output.dir)
        torch.manual_seed(mix_seed(cfg.train.seed, 5))  # same init on every rank (FSDP2 shards it as is)
        self.teachers = list(teachers) if teachers is not None else list(build_teachers(cfg.teachers).values())
        if not self.teachers:
            raise ValueError("No teachers: list at least one under 'teachers:' in the config")
        for t in self.teachers:
            t.to(self.env.device)
        self.names = [t.name for t in self.teachers]
        dims = {t.name: (t.summary_dim, t.patch_dim) for t in self.teachers}
        if primary is None:
            from .sources import build_view_sources

            primary, second = build_view_sources(cfg.data)
        self.stream = ViewStream(
            primary, cfg.train.global_batch_size, seed=cfg.train.seed, rank=self.env.rank,
            world_size=self.env.world_size, second=second, second_prob=cfg.data.second_source_prob,
            views_per_image=cfg.cache.views_per_image if cfg.cache.enabled else 0, workers=cfg.data.workers)
        self.cache = self._build_cache() if cfg.cache.enabled else None
        backbone = create_model(cfg.student.model, **cfg.student.arch)
        self.student = DistillStudent(backbone, cfg.student.head_hidden_dim, dims).to(self.env.device)
        if cfg.student.init:
            fresh = load_student_init(self.student, cfg.student.init)
            if fresh:
                logger.info("student.init: %d adapter tensors start fresh (teachers or widths differ)", len(fresh))
        if cfg.student.grad_checkpointing:
            backbone.set_grad_checkpointing(True)
        self.normalizer = TeacherNormalizer(dims, eps=cfg.train.norm_eps).to(self.env.device)
        self.model = wrap_model(self.student, self.env, cfg.train.parallel)
        if cfg.student.compile:
            backbone.compile()
        t = cfg.train
        self.peak_lr = scaled_lr(t.lr, t.global_batch_size, t.lr_scaling)
        # The fused kernel updates every parameter in one pass (a stage-1 demo step's update: 14 ms against 42 ms
        # for the per-parameter loop); FSDP2's sharded parameters keep the default implementation.
        fused = {} if self.env.enabled and t.parallel == "fsdp" else {"fused": True}
        self.optimizer = torch.optim.AdamW(param_groups(self.model, t.weight_decay), lr=self.peak_lr,
                                           betas=tuple(t.betas), **fused)
        self.step = 0

    # ---- pieces

    def _build_cache(self) -> FeatureCache:
        c = self.cfg.cache
        root = Path(c.dir) if c.dir else self.out / "teacher_cache"
        d = self.cfg.data  # only what changes the views or the teacher outputs (not e.g. the student's scale)
        fingerprint = sha256_of_json({"teachers": [to_dict(s) for s in self.cfg.teachers] or self.names,
                                      "sources": [d.source, d.second_source], "augment": to_dict(d.augment),
                                      "teacher_scales": d.teacher_scales, "data_id": self.data_id,
                                      "seed": self.cfg.train.seed, "views": c.views_per_image, "store": c.store_views})
        cache = FeatureCache.build(root, self.stream, self.teachers, fingerprint=fingerprint,
                                   views_per_image=c.views_per_image, shard_size=c.shard_size,
                                   batch_size=c.batch_size, store_views=c.store_views,
                                   teacher_scale=d.teacher_scales[0] if d.teacher_scales else None, rank=self.env.rank,
                                   world_size=self.env.world_size, progress=self.cfg.output.progress)
        if c.store_views:
            self.stream.sources = tuple(None if s is None else CachedViews(cache, i)
                                        for i, s in enumerate(self.stream.sources))
        self.stream.is_bad = cache.is_bad
        return cache

    def scales(self, step: int) -> tuple[int, int | None]:
        """(student scale, teacher scale or None for the teacher's native size) of global ``step``."""
        d = self.cfg.data
        g = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, 4, step))
        s = d.student_scales[int(torch.randint(len(d.student_scales), (), generator=g))]
        t = d.teacher_scales[int(torch.randint(len(d.teacher_scales), (), generator=g))] if d.teacher_scales else None
        return s, t

    def raw_targets(self, views: Tensor, keys: Tensor, teacher_scale: int | None) -> dict[str, TeacherOutput]:
        if self.cache is not None:
            return self.cache.targets(keys, self.names, self.env.device)
        size = (teacher_scale, teacher_scale) if teacher_scale is not None else None  # stage 3: the drawn scale
        out = {}
        for t in self.teachers:
            out[t.name] = t(views, size)
            check_output(out[t.name], t.name)  # one clear error naming the teacher if it has no patch grid
        return out

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.cfg.train.amp, self.env.device)

    def measure_normalization(self) -> None:
        """Per-coordinate teacher statistics over ``train.norm_iterations`` batches, then frozen (paper sec. 4)."""
        saved = self.stream.state_dict()
        n = self.cfg.train.norm_iterations
        for i in tqdm(range(n), desc="teacher statistics", disable=not (self.cfg.output.progress and self.env.is_main)):
            batch = self.stream.next_batch(i)
            _, t_scale = self.scales(i)
            raw = self.raw_targets(batch.images.to(self.env.device), batch.keys, t_scale)
            for name, out in raw.items():
                self.normalizer.update(name, out)
        self.stream.load_state_dict(saved)
        self.normalizer.all_reduce()
        self.normalizer.finalize()

    # ---- checkpoints

    def save(self) -> Path | None:
        model_sd, optim_sd = gather_state(self.model, self.optimizer)
        if not self.env.is_main:
            return None
        payload = {"step": self.step, "model": model_sd, "optimizer": optim_sd, "rng": rng_state(),
                   "data": self.stream.state_dict(), "normalizer": self.normalizer.state_dict(),
                   "config": to_dict(self.cfg)}
        return save_checkpoint(self.out, self.step, payload, keep=self.cfg.output.keep_checkpoints)

    def try_resume(self) -> bool:
        found = load_latest(self.out)
        if found is None:
            return False
        path, payload = found
        restore(self.model, self.optimizer, payload)
        self.normalizer.load_state_dict(payload["normalizer"])
        self.stream.load_state_dict(payload["data"])
        self.step = int(payload["step"])
        logger.info("Resumed from %s at step %d", path, self.step)
        return True

    # ---- training

    def train_step(self, step: int) -> dict[str, float]:
        t = self.cfg.train
        lr = warmup_cosine(step, t.iterations, self.peak_lr, t.warmup_iterations, end=self.peak_lr * t.min_lr_ratio)
        set_lr(self.optimizer, lr)
        batch = self.stream.next_batch(step)
        s_scale, t_scale = self.scales(step)
        views = batch.images.to(self.env.device, non_blocking=True)
        raw = self.raw_targets(views, batch.keys, t_scale)
        targets = {n: self.normalizer(n, o) for n, o in raw.items()}
        student_in = resize(views, s_scale)
        micro = t.accumulation_steps
        chunks = torch.arange(len(views)).chunk(micro)
        totals, terms_sum = torch.zeros((), device=self.env.device), {}
        for i, idx in enumerate(chunks):
            sync = i == len(chunks) - 1
            with self._no_sync(not sync), self.autocast():
                preds = self.model(student_in[idx])
                loss, terms = distillation_loss(
                    preds, {n: TeacherOutput(o.summary[idx], o.patches[idx]) for n, o in targets.items()},
                    self.cfg.loss)
            (loss * len(idx) / len(views)).backward()
            totals += loss.detach() * len(idx) / len(views)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0) + v * len(idx) / len(views)
        metrics = all_reduce_mean({"loss": totals, **{f"loss/{k}": v for k, v in terms_sum.items()}})
        if not math.isfinite(metrics["loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            kept = next(iter(list_checkpoints(self.out)), None)
            raise NonFiniteLossError(
                f"The loss became {metrics['loss']} at step {step}; training stopped. The last good checkpoint "
                f"({kept or 'none yet'}) is kept: lower train.lr or enable train.grad_clip, then rerun to resume")
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip) if t.grad_clip > 0
                     else torch.zeros(()))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics.update(lr=lr, grad_norm=float(grad_norm), student_scale=s_scale,
                       skipped_images=self.stream.state.skipped)
        if t_scale is not None:
            metrics["teacher_scale"] = t_scale
        return metrics

    def _no_sync(self, skip_sync: bool) -> contextlib.AbstractContextManager:
        if skip_sync and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(not skip_sync)
        return contextlib.nullcontext()

    def run(self) -> RunResult:
        cfg, env = self.cfg, self.env
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        resumed = self.try_resume()
        if not resumed:
            self.measure_normalization()
        self.student.train()
        log = MetricsLogger(self.out, start_step=self.step, enabled=env.is_main, tensorboard=cfg.output.tensorboard)
        bar = tqdm(total=cfg.train.iterations, initial=self.step, desc=f"stage {cfg.train.stage}", unit="it",
                   disable=not (cfg.output.progress and env.is_main), dynamic_ncols=True)
        metrics: dict[str, float] = {}
        try:
            while self.step < cfg.train.iterations:
                start = time.perf_counter()
                metrics = self.train_step(self.step)
                metrics["step_time"] = time.perf_counter() - start
                if self.step % cfg.output.log_every == 0 or self.step == cfg.train.iterations - 1:
                    log.log(self.step, metrics)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                if self.step % cfg.output.checkpoint_every == 0 or self.step == cfg.train.iterations:
                    self.save()
        finally:
            bar.close()
            log.close()
            self.stream.close()
        return self.finish(metrics)

    def finish(self, metrics: dict[str, float]) -> RunResult:
        model_sd, _ = gather_state(self.model, self.optimizer)
        result = RunResult(self.out, self.step, final_loss=metrics.get("loss", math.nan),
                           skipped_images=self.stream.state.skipped)
        if self.env.is_main:
            result.export_path, result.norms_path = export_student(
                self.out / self.cfg.output.export_name, model_sd, self.normalizer.export())
            if available("matplotlib"):
                plot_losses(read_metrics(self.out / "metrics.jsonl"), self.out / "losses.png")
            else:
                logger.info("losses.png not drawn: %s", install_hint("matplotlib"))
            atomic_write_json(self.out / "summary.json", {
                "steps": self.step, "final_loss": result.final_loss, "skipped_images": result.skipped_images,
                "skipped_examples": self.stream.state.skipped_reasons[:100],
                "export": str(result.export_path.name), "norms": str(result.norms_path.name),
                "peak_memory_mb": peak_memory_mb(self.env.device)})
        return result


def sha256_of_json(data: object) -> str:
    """Hex digest of ``data``'s canonical JSON: a stable identity for settings (e.g. the cache fingerprint)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory (CUDA) or peak resident memory of this process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def distill(cfg: DistillConfig, **kwargs) -> RunResult:
    """Builds a :class:`Distiller` and runs it (the library entry point of ``eupe distill``)."""
    return Distiller(cfg, **kwargs).run()
