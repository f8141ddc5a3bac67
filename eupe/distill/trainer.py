"""One training loop for all three EUPE stages.

Stage 1 (several teachers -> proxy), stage 2 (proxy -> student at one scale) and stage 3 (proxy -> student,
each side drawing a scale per iteration) differ only in their config: the teachers, the student, the scales and
the hyper-parameters. Each iteration: render this rank's slice of the global batch of augmented views, get the
teachers' outputs (live, or from the feature cache), standardise them with the frozen statistics, run the
student and its heads under bf16 autocast, and take an AdamW step with a warm-up + cosine LR, gradient
accumulation and clipping. Checkpoints are atomic and a restarted run resumes from the newest one.

No run computes a wrong result silently: the output folder is locked against a second run (rank 0 holds it) and
the partial files of a killed write are removed under that lock; a resume whose settings differ from its
checkpoint's is refused unless ``resume.allow_changes`` is set, and then the changes go to ``config_changes.jsonl``.
A NaN/inf loss or gradient norm stops the run before the optimizer steps on it, and NaN/inf weights are never
written. A checkpoint counts as good once a step has used its weights with a finite loss and gradient norm: older
checkpoints are pruned only then, and a checkpoint whose weights are the first to diverge is renamed
``ckpt-<step>.diverged.pt``, so the last good checkpoint an error names is one a lower LR can resume from.
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
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..config import ConfigError, save_config, to_dict
from ..loading import non_finite_keys
from ..loading.sources import split_key
from ..models import create_model
from ..teachers import Teacher, TeacherError, TeacherOutput, build_teachers
from ..teachers.common import check_output
from ..utils.cache import file_sha256
from ..utils.device import autocast
from ..utils.io import atomic_write_json, remove_stale_temporaries
from ..utils.optional import available, install_hint
from ..utils.outputs import locked_output_dir
from ..utils.schedule import scaled_lr, set_lr, warmup_cosine
from .cache import CachedViews, FeatureCache
from .checkpoint import (
    export_student,
    gather_state,
    list_checkpoints,
    load_latest,
    load_student_init,
    prune_checkpoints,
    restore,
    rng_state,
    save_checkpoint,
)
from .config import DistillConfig, settings_changes
from .data import ViewSource, ViewStream, mix_seed
from .distributed import DistEnv, all_reduce_mean, barrier, init_distributed, wrap_model
from .loss import distillation_loss
from .monitor import MetricsLogger, plot_losses, read_metrics
from .normalization import TeacherNormalizer
from .student import DistillStudent

logger = logging.getLogger(__name__)


CHANGES_FILE = "config_changes.jsonl"  # one line per resume with changed settings: step, checkpoint, old -> new


class NonFiniteError(RuntimeError):
    """The loss, the gradient norm or the weights became NaN/inf: the run stops before the optimizer steps on
    them, no checkpoint holds them, and the message says which checkpoint to resume from."""


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
        c = cfg.cache
        self.cache_root = Path(c.dir) if c.dir else self.out / "teacher_cache"
        self.weight_digests = weight_digests(cfg)
        with contextlib.ExitStack() as held:
            if self.env.is_main:  # a second run into this folder is refused; partial files of a killed one go
                held.enter_context(locked_output_dir(self.out, "eupe distill"))
                inside = self.cache_root.resolve().is_relative_to(self.out.resolve())
                for folder in [self.out] + ([self.cache_root] if inside else []):
                    remove_stale_temporaries(folder)
            barrier()
            self.resume_point, self.settings_changed = self._checked_resume_point()
            self._build(teachers, primary, second)
            self._held = held.pop_all()  # the lock is released when run() ends

    def _build(self, teachers: Sequence[Teacher] | None, primary: ViewSource | None,
               second: ViewSource | None) -> None:
        cfg = self.cfg
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
            fresh = load_student_init(self.student, cfg.student.init, model_name=cfg.student.model)
            if fresh:
                logger.info("student.init: %d adapter tensors start fresh (teachers or widths differ)", len(fresh))
        if cfg.student.grad_checkpointing:
            backbone.set_grad_checkpointing(True)
        self.normalizer = TeacherNormalizer(dims, eps=cfg.train.norm_eps).to(self.env.device)
        self.model = wrap_model(self.student, self.env, cfg.train.parallel)
        if cfg.student.compile:
            # The whole student (backbone and heads) in place, after wrapping: DDP/FSDP2 keep the original
            # parameters and state-dict keys, and DDP/FSDP2 call the compiled forward. Not the backbone alone: the
            # student calls its forward_features, which Module.compile (it compiles __call__) would not reach.
            # One static graph per input shape (stage 3: one per scale, a bounded set): inductor's dynamic-shape
            # graph for the ViT failed a stride assertion when the scale changed (torch 2.13, CPU).
            self.student.compile(backend=cfg.student.compile_backend, dynamic=False)
            shapes = len(cfg.data.student_scales)
            if shapes > torch._dynamo.config.recompile_limit:
                torch._dynamo.config.recompile_limit = shapes
        t = cfg.train
        self.peak_lr = scaled_lr(t.lr, t.global_batch_size, t.lr_scaling)
        # The fused kernel updates every parameter in one pass (a stage-1 demo step's update: 14 ms against 42 ms
        # for the per-parameter loop); FSDP2's sharded parameters keep the default implementation.
        fused = {} if self.env.enabled and t.parallel == "fsdp" else {"fused": True}
        self.optimizer = torch.optim.AdamW(param_groups(self.model, t.weight_decay), lr=self.peak_lr,
                                           betas=tuple(t.betas), **fused)
        self.step = 0
        self.unverified: Path | None = None  # the newest checkpoint (main rank) before a step has used its weights

    # ---- pieces

    def _build_cache(self) -> FeatureCache:
        c = self.cfg.cache
        d = self.cfg.data  # only what changes the views or the teacher outputs (not e.g. the student's scale)
        fingerprint = sha256_of_json({"teachers": [to_dict(s) for s in self.cfg.teachers] or self.names,
                                      "sources": [d.source, d.second_source], "augment": to_dict(d.augment),
                                      "teacher_scales": d.teacher_scales, "data_id": self.data_id,
                                      "seed": self.cfg.train.seed, "views": c.views_per_image, "store": c.store_views,
                                      "weights": {k: v for k, v in self.weight_digests.items()
                                                  if k.startswith("teachers.")}})
        cache = FeatureCache.build(self.cache_root, self.stream, self.teachers, fingerprint=fingerprint,
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
        bad = non_finite_keys(self.normalizer.export())
        if bad:
            teachers = sorted({key.split(".")[0] for key in bad})
            raise TeacherError(f"The normalisation statistics of teacher(s) {', '.join(teachers)} are NaN/inf "
                               f"({', '.join(bad[:3])}): they gave NaN/inf features; check their weights")

    # ---- checkpoints

    def save(self) -> Path | None:
        """Writes ``ckpt-<step>.pt`` (main rank) after checking that no weight or optimizer state is NaN/inf."""
        model_sd, optim_sd = gather_state(self.model, self.optimizer)
        if not self.env.is_main:
            return None
        bad = non_finite_keys({"model": model_sd, "optimizer": optim_sd})
        if bad:
            raise NonFiniteError(f"At step {self.step} {len(bad)} tensors of the model and optimizer hold NaN/inf "
                                 f"({', '.join(bad[:3])}); no checkpoint was written.")
        payload = {"step": self.step, "model": model_sd, "optimizer": optim_sd, "rng": rng_state(),
                   "data": self.stream.state_dict(), "normalizer": self.normalizer.state_dict(),
                   "config": to_dict(self.cfg), "inputs": self.weight_digests}
        self.unverified = save_checkpoint(self.out, self.step, payload)
        return self.unverified

    def _checked_resume_point(self) -> tuple[tuple[Path, dict[str, Any]] | None, dict[str, tuple[Any, Any]]]:
        """The newest checkpoint of ``output.dir`` (``None`` for a fresh run) and the settings that differ from its
        own; refused when it holds NaN/inf, or when settings differ without ``resume.allow_changes``."""
        found = load_latest(self.out)
        if found is None:
            return None, {}
        path, payload = found
        bad = non_finite_keys({"model": payload["model"], "optimizer": payload["optimizer"]})
        if bad:
            raise NonFiniteError(f"{path} holds NaN/inf in {len(bad)} tensors ({', '.join(bad[:3])}), written by a "
                                 "run that diverged: delete it to resume from an older checkpoint, or start afresh "
                                 "with another output.dir")
        changes = settings_changes({**payload["config"], "inputs": payload.get("inputs", {})},
                                   {**to_dict(self.cfg), "inputs": self.weight_digests})
        if changes and not self.cfg.resume.allow_changes:
            detail = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            raise ConfigError(
                f"{self.out} holds a run at step {payload['step']} ({path.name}) whose settings differ from these: "
                f"{detail}. Rerun with its settings to resume it, add --set resume.allow_changes=true to resume it "
                f"with the new ones (recorded in {self.out / CHANGES_FILE}), or start afresh with another output.dir")
        return found, changes

    def try_resume(self) -> bool:
        """Restores the checked resume point, if any (model, optimizer, RNG, data position, statistics)."""
        if self.resume_point is None:
            return False
        path, payload = self.resume_point
        restore(self.model, self.optimizer, payload)
        self.normalizer.load_state_dict(payload["normalizer"])
        self.stream.load_state_dict(payload["data"])
        self.step = int(payload["step"])
        self.resume_point = None  # drops the memory-mapped file
        # with the settings that wrote it, its next step is the one it was saved before: it verifies it again
        self.unverified = None if self.settings_changed or not self.env.is_main else path
        logger.info("Resumed from %s at step %d", path, self.step)
        return True

    def _record_settings(self) -> None:
        """``config.yaml`` holds this run's settings; changes a resume accepted are appended to CHANGES_FILE."""
        save_config(self.cfg, self.out / "config.yaml")
        if self.settings_changed and self.resume_point is not None:
            path, payload = self.resume_point
            changes = {key: {"old": old, "new": new} for key, (old, new) in self.settings_changed.items()}
            logger.warning("Resuming %s with changed settings (resume.allow_changes): %s", path.name,
                           "; ".join(f"{k}: {c['old']!r} -> {c['new']!r}" for k, c in changes.items()))
            with open(self.out / CHANGES_FILE, "a") as f:
                f.write(json.dumps({"step": int(payload["step"]), "checkpoint": path.name,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes}) + "\n")

    def _after_divergence(self) -> str:
        """Renames the checkpoint whose weights diverged (if the step that diverged was the first to use them) and
        says what to do; the advice is true for this run: the checkpoint it names led to finite steps."""
        if not self.env.is_main:
            return "The main process (rank 0) says which checkpoint to resume from."
        t = self.cfg.train
        fixes = " or ".join(["lower train.lr"] + (["set train.grad_clip (e.g. 1.0)"] if t.grad_clip <= 0 else [])
                            + (["set train.warmup_iterations"] if t.warmup_iterations == 0 else []))
        renamed = ""
        if self.unverified is not None and self.unverified.is_file():
            target = self.unverified.with_suffix(".diverged.pt")
            self.unverified.replace(target)
            renamed = f" ({self.unverified.name}, saved just before, holds weights that diverge: renamed {target.name})"
        kept = next(iter(list_checkpoints(self.out)), None)
        if kept is None:
            return f"No checkpoint precedes the divergence{renamed}: {fixes}, and rerun (it starts afresh)."
        return (f"The last good checkpoint is {kept}{renamed}: {fixes}, and rerun with --set "
                "resume.allow_changes=true to resume from it, or start afresh with another output.dir.")

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
            broken = [n for n, o in raw.items() if non_finite_keys({"summary": o.summary, "patches": o.patches})]
            if broken:
                where = "the feature cache of " if self.cache is not None else ""
                raise TeacherError(f"The loss became {metrics['loss']} at step {step} because {where}teacher(s) "
                                   f"{', '.join(broken)} gave NaN/inf features for its batch; check their weights")
            raise NonFiniteError(f"The loss became {metrics['loss']} at step {step}; training stopped before the "
                                 "optimizer step.")
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip) if t.grad_clip > 0
                          else torch.nn.utils.get_total_norm([p.grad for p in params]))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"The gradient norm became {grad_norm} at step {step} (the loss was "
                                 f"{metrics['loss']:.4g}); training stopped before the optimizer step.")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics.update(lr=lr, grad_norm=grad_norm, student_scale=s_scale,
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
        """Trains to ``train.iterations`` (resuming from the checked checkpoint), exports, releases the folder."""
        with self._held:  # the output folder's lock (rank 0), taken by the constructor
            return self._train()

    def _train(self) -> RunResult:
        cfg, env = self.cfg, self.env
        if env.is_main:
            self._record_settings()
        if not self.try_resume():
            self.measure_normalization()
        self.student.train()
        log = MetricsLogger(self.out, start_step=self.step, enabled=env.is_main, tensorboard=cfg.output.tensorboard)
        bar = tqdm(total=cfg.train.iterations, initial=self.step, desc=f"stage {cfg.train.stage}", unit="it",
                   disable=not (cfg.output.progress and env.is_main), dynamic_ncols=True)
        metrics: dict[str, float] = {}
        keep = cfg.output.keep_checkpoints
        try:
            while self.step < cfg.train.iterations:
                start = time.perf_counter()
                metrics = self.train_step(self.step)
                metrics["step_time"] = time.perf_counter() - start
                if self.unverified is not None:  # its weights gave a finite step: older checkpoints may go
                    prune_checkpoints(self.out, keep)
                    self.unverified = None
                if self.step % cfg.output.log_every == 0 or self.step == cfg.train.iterations - 1:
                    log.log(self.step, metrics)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                if self.step % cfg.output.checkpoint_every == 0 or self.step == cfg.train.iterations:
                    self.save()
        except NonFiniteError as err:
            raise NonFiniteError(f"{err} {self._after_divergence()}") from None
        finally:
            bar.close()
            log.close()
            self.stream.close()
        if env.is_main:
            prune_checkpoints(self.out, keep)
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


def weight_digests(cfg: DistillConfig) -> dict[str, str]:
    """``{setting: "sha256:<hex>"}`` of the local weight files the settings name (``teachers.<i>.weights``,
    ``student.init``): a file replaced under the same name changes what a run computes, so a resume compares these
    as it compares the settings, and the teacher-feature cache's fingerprint holds the teachers'."""
    named = {f"teachers.{i}.weights": spec.weights for i, spec in enumerate(cfg.teachers)}
    named["student.init"] = cfg.student.init
    paths = {key: Path(split_key(value)[0]).expanduser() for key, value in named.items() if value}
    return {key: f"sha256:{file_sha256(path)}" for key, path in paths.items() if path.is_file()}


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
