"""The distillation run's settings: one dataclass tree for all three stages, filled from eupe/configs/distill/*.yaml.

``load_distill_config("stage2", ["train.lr=1e-4"])`` takes a shipped config name (package data,
``eupe/configs/distill/<name>.yaml``)
or a path, applies ``key.sub=value`` overrides and rejects unknown keys (:func:`eupe.config.load_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError, load_config, resolve_config
from ..data.augment import AugmentConfig
from ..teachers import TeacherSpec
from .loss import LossConfig

CONFIG_GROUP = "distill"  # eupe/configs/distill/*.yaml


@dataclass
class StudentConfig:
    model: str = "eupe_vitt16"  # any registered name (eupe.list_models()); stage 1: eupe_proxy_vitg16
    arch: dict[str, Any] = field(default_factory=dict)  # create_model overrides, e.g. {depth: 6, embed_dim: 384}
    init: str | None = None  # exported student to start from (stage 3: the stage-2 export)
    head_hidden_dim: int = 3072  # adapter-head width: 1536 in stage 1, 3072 in stages 2-3 [P]
    grad_checkpointing: bool = False
    compile: bool = False


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
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    teachers: list[TeacherSpec] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def load_distill_config(name_or_path: str | Path | None, overrides: Sequence[str] = ()) -> DistillConfig:
    """The named shipped config (``stage1``/``stage2``/``stage3``) or a YAML file, with ``key=value`` overrides."""
    path = resolve_config(CONFIG_GROUP, name_or_path) if name_or_path else None
    cfg = load_config(DistillConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: DistillConfig) -> None:
    """Cross-field checks that the dataclass types cannot express; one clear error each."""
    t = cfg.train
    if t.global_batch_size <= 0 or t.iterations <= 0 or t.accumulation_steps <= 0:
        raise ConfigError("train.global_batch_size, train.iterations and train.accumulation_steps must be > 0")
    if t.amp not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.amp must be auto, bf16 or fp32, got {t.amp!r}")
    if t.parallel not in ("ddp", "fsdp", "none"):
        raise ConfigError(f"train.parallel must be ddp, fsdp or none, got {t.parallel!r}")
    if len(t.betas) != 2:
        raise ConfigError(f"train.betas must hold two numbers, got {t.betas}")
    if not cfg.data.student_scales:
        raise ConfigError("data.student_scales must list at least one input size")
    if max(cfg.data.student_scales + cfg.data.teacher_scales) > cfg.data.augment.size:
        raise ConfigError("data.augment.size must be at least the largest of data.student_scales/teacher_scales "
                          "(views are cropped once, then resized down)")
    if cfg.cache.enabled and len(cfg.data.teacher_scales) > 1:
        raise ConfigError("cache.enabled needs a fixed teacher input (data.teacher_scales with at most one size)")
    names = [s.display_name for s in cfg.teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"Teacher names must be unique, got {names}; set name: for each teacher")

