"""The distillation run's settings: one dataclass tree for all three stages, filled from eupe/configs/distill/*.yaml.

``load_distill_config("stage2", ["train.lr=1e-4"])`` takes a shipped config name (package data,
``eupe/configs/distill/<name>.yaml``)
or a path, applies ``key.sub=value`` overrides and rejects unknown keys (:func:`eupe.config.load_config`).

A run resumed from a checkpoint must have the checkpoint's settings: :func:`settings_changes` lists the ones that
differ, except :data:`RESULT_NEUTRAL` settings, which change nothing the run computes (where and how often it
logs and saves, how many processes read the data). ``resume.allow_changes=true`` resumes anyway and the trainer
records the changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError, load_config, resolve_config
from ..data.augment import AugmentConfig
from ..teachers import TeacherSpec
from ..utils.schedule import LR_SCALING_RULES
from .loss import LossConfig

CONFIG_GROUP = "distill"  # eupe/configs/distill/*.yaml


@dataclass
class StudentConfig:
    model: str = "eupe_vitt16"  # any registered name (eupe.list_models()); stage 1: eupe_proxy_vitg16
    arch: dict[str, Any] = field(default_factory=dict)  # create_model overrides, e.g. {depth: 6, embed_dim: 384}
    init: str | None = None  # exported student to start from (stage 3: the stage-2 export)
    head_hidden_dim: int = 3072  # adapter-head width: 1536 in stage 1, 3072 in stages 2-3 [P]
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile the student (backbone + heads) in place; state-dict keys stay the same
    compile_backend: str = "inductor"  # torch.compile's backend; "aot_eager" compiles fast without codegen (tests)


@dataclass
class DataConfig:
    source: str = ""  # image folder, glob, list file or tar shards (*.tar, {000..099}.tar): data.sources.open_source
    second_source: str | None = None  # optional curated set sampled as homogeneous batches
    second_source_prob: float = 0.1  # paper: 10% ImageNet-1k batches [P]
    student_scales: list[int] = field(default_factory=lambda: [256])  # stage 3: [256, 384, 512]
    teacher_scales: list[int] = field(default_factory=list)  # proxy teacher scales (stage 3); empty: teacher native
    # crop (augment.size: stage 3 crops at the largest scale, then resizes), flip, jitter, blur, solarisation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 8  # processes (at most one per CPU) decoding and augmenting the next batches while a step
    #                   trains; 0: inside the step


@dataclass
class TrainConfig:
    stage: int = 2
    iterations: int = 390_000
    global_batch_size: int = 8192
    accumulation_steps: int = 1
    lr: float = 2e-5
    lr_scaling: str = "none"  # none | linear_wrt_256 | sqrt_wrt_1024
    min_lr_ratio: float = 0.0
    warmup_iterations: int = 0
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # 0 disables
    amp: str = "auto"  # bf16 autocast: auto (where bf16 is native: CUDA, AMX, AVX512-BF16), bf16, fp32
    parallel: str = "ddp"  # ddp | fsdp | none (used under torchrun)
    device: str | None = None
    seed: int = 0
    norm_iterations: int = 500  # batches measured for the teacher normalisation statistics [P]
    norm_eps: float = 1e-6


@dataclass
class CacheConfig:
    enabled: bool = False
    dir: str = ""  # default: <output.dir>/teacher_cache
    views_per_image: int = 4
    store_views: bool = True  # keep the uint8 crops too (no decoding in later epochs)
    shard_size: int = 256
    batch_size: int = 64


@dataclass
class OutputConfig:
    dir: str = "runs/distill"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 1
    tensorboard: bool = True
    progress: bool = True
    export_name: str = "student.pt"


@dataclass
class ResumeConfig:
    # resume from a checkpoint written with other settings (they are listed in <output.dir>/config_changes.jsonl);
    # without it such a resume is refused, naming the settings that differ
    allow_changes: bool = False


@dataclass
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    teachers: list[TeacherSpec] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)


# Settings a resumed run may change freely: they do not change what it computes (the data workers render the same
# batches; checkpoints and logs are written at step boundaries and a resume is bit-identical to a run without one).
RESULT_NEUTRAL = ("output.dir", "output.checkpoint_every", "output.keep_checkpoints", "output.log_every",
                  "output.tensorboard", "output.progress", "output.export_name", "data.workers", "cache.dir",
                  "resume")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "t": [{"c": 2}]}`` -> ``{"a.b": 1, "t.0.c": 2}``; lists of plain values stay whole."""
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, (dict, list)) for v in tree):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` of the settings (``to_dict`` of two configs) that differ, except the
    :data:`RESULT_NEUTRAL` ones; a key missing on one side reads as ``None`` there."""
    flat_old, flat_new = flatten(old), flatten(new)
    return {key: (flat_old.get(key), flat_new.get(key)) for key in sorted(set(flat_old) | set(flat_new))
            if flat_old.get(key) != flat_new.get(key)
            and not any(key == n or key.startswith(n + ".") for n in RESULT_NEUTRAL)}


def load_distill_config(name_or_path: str | Path | None, overrides: Sequence[str] = ()) -> DistillConfig:
    """The named shipped config (``stage1``/``stage2``/``stage3``) or a YAML file, with ``key=value`` overrides."""
    path = resolve_config(CONFIG_GROUP, name_or_path) if name_or_path else None
    cfg = load_config(DistillConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: DistillConfig) -> None:
    """Cross-field checks that the dataclass types cannot express; one clear error each."""
    t, d, c, o, loss = cfg.train, cfg.data, cfg.cache, cfg.output, cfg.loss
    if len(t.betas) != 2:
        raise ConfigError(f"train.betas must hold two numbers, got {t.betas}")
    checks = [  # counts, sizes and periods (0 would divide by zero), then weights and rates, then fractions
        ("must be > 0", lambda v: v > 0, {
            "train.global_batch_size": t.global_batch_size, "train.iterations": t.iterations,
            "train.accumulation_steps": t.accumulation_steps, "train.norm_iterations": t.norm_iterations,
            "train.norm_eps": t.norm_eps, "output.checkpoint_every": o.checkpoint_every,
            "output.keep_checkpoints": o.keep_checkpoints, "output.log_every": o.log_every,
            "cache.views_per_image": c.views_per_image, "cache.shard_size": c.shard_size,
            "cache.batch_size": c.batch_size, "student.head_hidden_dim": cfg.student.head_hidden_dim,
            **{f"data.student_scales[{i}]": v for i, v in enumerate(d.student_scales)},
            **{f"data.teacher_scales[{i}]": v for i, v in enumerate(d.teacher_scales)}}),
        ("must be >= 0", lambda v: v >= 0, {
            "train.lr": t.lr, "train.warmup_iterations": t.warmup_iterations, "train.weight_decay": t.weight_decay,
            "train.grad_clip": t.grad_clip, "data.workers": d.workers,
            "loss.patch_cosine_weight": loss.patch_cosine_weight,
            "loss.patch_smooth_l1_weight": loss.patch_smooth_l1_weight, "loss.smooth_l1_beta": loss.smooth_l1_beta,
            **{f"loss.teacher_weights.{k}": v for k, v in loss.teacher_weights.items()},
            **{f"loss.patch_weights.{k}": v for k, v in loss.patch_weights.items()}}),
        ("must be between 0 and 1", lambda v: 0 <= v <= 1, {
            "train.min_lr_ratio": t.min_lr_ratio, "data.second_source_prob": d.second_source_prob,
            "train.betas[0]": t.betas[0], "train.betas[1]": t.betas[1]}),
    ]
    for rule, ok, values in checks:
        for key, value in values.items():
            if not (math.isfinite(value) and ok(value)):
                raise ConfigError(f"{key} {rule}, got {value}")
    if t.amp not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.amp must be auto, bf16 or fp32, got {t.amp!r}")
    if t.parallel not in ("ddp", "fsdp", "none"):
        raise ConfigError(f"train.parallel must be ddp, fsdp or none, got {t.parallel!r}")
    if t.lr_scaling not in LR_SCALING_RULES:
        raise ConfigError(f"train.lr_scaling must be one of {', '.join(LR_SCALING_RULES)}, got {t.lr_scaling!r}")
    if not d.student_scales:
        raise ConfigError("data.student_scales must list at least one input size")
    if max(d.student_scales + d.teacher_scales) > d.augment.size:
        raise ConfigError("data.augment.size must be at least the largest of data.student_scales/teacher_scales "
                          "(views are cropped once, then resized down)")
    if c.enabled and len(d.teacher_scales) > 1:
        raise ConfigError("cache.enabled needs a fixed teacher input (data.teacher_scales with at most one size)")
    if Path(o.export_name).name != o.export_name or Path(o.export_name).suffix not in (".pt", ".pth"):
        raise ConfigError(f"output.export_name must be a file name ending in .pt or .pth (it is written in "
                          f"output.dir), got {o.export_name!r}")
    names = [s.display_name for s in cfg.teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"Teacher names must be unique, got {names}; set name: for each teacher")
