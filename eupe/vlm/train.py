"""LLaVA-1.5's two training stages on ``transformers.Trainer``: (a) the projector alone on image-caption pairs,
(b) the projector and the language model on instruction data; the EUPE tower stays frozen in both.

Both stages are one epoch of AdamW with a cosine schedule, warm-up ratio 0.03 and no weight decay (the paper's
Appendix C.2); stage (a) at LR 1e-3, stage (b) at 2e-5, global batch 256 and 128 (LLaVA-1.5's, the paper gives
none). Because the loop is transformers' own, ``torchrun``, FSDP (``fsdp=...``) and DeepSpeed (``deepspeed=...``)
work as they do for any Trainer run, and a rerun with the same ``output_dir`` resumes from its newest checkpoint;
a rerun whose settings differ from the recorded ones is refused, naming them.

``tower_cache=FOLDER`` runs the frozen tower once per image of the data, stores its output there and trains from it
(:mod:`eupe.vlm.tower_cache`): the batches carry the cached features and a stand-in takes the tower's place, whose
parameters are the real tower's, so checkpoints and the saved folder are the same VLM as without a cache.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..config import load_config, resolve_config, to_dict
from ..utils.cache import file_sha256
from ..utils.device import bf16_enabled, resolve_device
from ..utils.io import atomic_write_json
from .build import check_vlm_folder
from .data import DataReport, LlavaCollator, LlavaDataset
from .tower_cache import CachedFeatureTower, prepare_tower_cache

logger = logging.getLogger(__name__)

CONFIG_GROUP = "vlm"  # eupe/configs/vlm/<stage>.yaml
SETTINGS_FILE = "eupe_train_settings.json"  # what a run was started with; a resume must match it


@dataclass
class VLMTrainConfig:
    """One training stage; the shipped ``stage_a`` / ``stage_b`` configs hold the paper's values."""

    stage: Literal["a", "b"] = "a"  # a: projector only, plain captions; b: projector + LLM, conversations
    model: str = ""  # the VLM folder to start from: `eupe vlm build` output (a) or the stage-(a) output (b)
    data: str = ""  # LLaVA JSON: blip_laion_cc_sbu_558k.json (a) or llava_v1_5_mix665k.json (b)
    image_root: str = ""  # the folder the JSON's "image" paths are relative to
    output_dir: str = ""
    lr: float = 1e-3
    global_batch_size: int = 256  # per step, over all processes and accumulation steps
    per_device_batch_size: int = 16
    epochs: float = 1.0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (smoke runs)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: int = 2048  # tokens per sample, image tokens included (never cut)
    amp: str = "auto"  # bf16 autocast: auto (where bf16 is native: CUDA, AMX, AVX512-BF16), bf16, fp32
    gradient_checkpointing: bool = False  # of the language model (stage b at 7B scale)
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    dataloader_workers: int = 2
    device: str = ""  # "" = CUDA when available (under torchrun: each process's own GPU)
    fsdp: str = ""  # transformers' fsdp argument, e.g. "full_shard auto_wrap"
    deepspeed: str = ""  # a DeepSpeed JSON config (ZeRO-2/3)
    seed: int = 0
    # A folder of the frozen tower's features per image, filled on first use (resumable), then read instead of
    # running the tower; "" = off. Valid in both stages: the tower is frozen in (b) too and images only feed it.
    # It pays where the tower is a large share of a step (stage a) over several epochs or runs of one data set.
    tower_cache: str = ""
    # The LM head (hidden x vocabulary) only at the positions the loss reads (LlavaCollator's supervised_logits):
    # the same loss and gradients; off for context parallelism, which splits shift_labels along the sequence.
    supervised_logits: bool = True


def load_train_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> VLMTrainConfig:
    """A shipped stage config (``stage_a``, ``stage_b``) or a YAML file, with ``key=value`` overrides, checked."""
    cfg = load_config(VLMTrainConfig, resolve_config(CONFIG_GROUP, name_or_path), overrides)
    if cfg.global_batch_size <= 0 or cfg.per_device_batch_size <= 0:
        raise ValueError("vlm train: global_batch_size and per_device_batch_size must be positive")
    return cfg


def set_trainable(model: nn.Module, stage: str) -> list[str]:
    """Freezes everything but what ``stage`` trains (a: projector; b: projector + language model and its head);
    returns the names of the trainable top-level parts."""
    model.requires_grad_(False)
    parts = {"multi_modal_projector": model.model.multi_modal_projector}
    if stage == "b":
        parts.update(language_model=model.model.language_model, lm_head=model.lm_head)
    for module in parts.values():
        module.requires_grad_(True)
    return list(parts)


def accumulation_steps(cfg: VLMTrainConfig, world_size: int) -> int:
    """Gradient accumulation that makes ``per_device_batch_size x processes x steps == global_batch_size``."""
    per_step = cfg.per_device_batch_size * world_size
    if cfg.global_batch_size % per_step:
        raise ValueError(f"vlm train: global_batch_size={cfg.global_batch_size} is not a multiple of "
                         f"per_device_batch_size x processes = {cfg.per_device_batch_size} x {world_size}; "
                         "change one of them")
    return cfg.global_batch_size // per_step


def input_digests(cfg: VLMTrainConfig) -> dict[str, str]:
    """SHA-256 of what a run reads besides its settings: the data file and the starting folder's config and
    weights, so a resume notices a file replaced under the same name (the images are not hashed: too many)."""
    model = Path(cfg.model)
    files = {"data": Path(cfg.data), "model/config.json": model / "config.json",
             **{f"model/{w.name}": w for w in sorted(model.glob("*.safetensors"))}}
    return {name: file_sha256(path) for name, path in files.items() if path.is_file()}


def _check_resume(cfg: VLMTrainConfig, out: Path) -> bool:
    """Whether ``out`` holds a run to resume; refuses when its recorded settings or input files differ from
    ``cfg``'s, naming them."""
    recorded_path = out / SETTINGS_FILE
    settings = {**to_dict(cfg), "inputs": input_digests(cfg)}
    if recorded_path.is_file():
        recorded = json.loads(recorded_path.read_text())
        changed = sorted(k for k in set(settings) | set(recorded) if settings.get(k) != recorded.get(k))
        if changed:
            detail = ", ".join(_change(k, recorded.get(k), settings.get(k)) for k in changed)
            raise ValueError(f"vlm train: {out} holds a run started with other settings ({detail}); use another "
                             "output_dir, or the recorded settings to resume it")
    else:
        atomic_write_json(recorded_path, settings)
    return any(out.glob("checkpoint-*"))


def _change(key: str, old: object, new: object) -> str:
    if key == "inputs" and isinstance(old, dict) and isinstance(new, dict):
        files = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "input files changed since the run started: " + ", ".join(files)
    return f"{key}: {old!r} -> {new!r}"


def train_stage(cfg: VLMTrainConfig) -> Path:
    """Runs one stage and saves the trained VLM (model + processor) as a transformers folder in ``output_dir``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    for name in ("model", "data", "image_root", "output_dir"):
        if not getattr(cfg, name):
            raise ValueError(f"vlm train: set {name}=... (for example --set {name}=PATH)")
    check_vlm_folder(cfg.model)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume = _check_resume(cfg, out)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device or None)
    bf16 = bf16_enabled(cfg.amp, device)

    processor = AutoProcessor.from_pretrained(cfg.model)
    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=torch.float32)
    trainable = set_trainable(model, cfg.stage)
    if cfg.gradient_checkpointing:
        model.model.language_model.activation_checkpointing_enable()
    report = DataReport(out / "data_report.jsonl")
    dataset = LlavaDataset(cfg.data, cfg.image_root, image_token=processor.image_token, report=report)
    collator = LlavaCollator(processor.tokenizer, processor.image_processor,
                             num_image_tokens=model.config.image_seq_length, max_length=cfg.max_length,
                             mode="plain" if cfg.stage == "a" else "conversation", image_token=processor.image_token,
                             report=report, supervised_logits=cfg.supervised_logits)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(cfg, world_size), learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay, optim="adamw_torch", bf16=bf16, use_cpu=device.type == "cpu",
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, dataloader_num_workers=cfg.dataloader_workers,
        remove_unused_columns=False, report_to=[], seed=cfg.seed, data_seed=cfg.seed, fsdp=cfg.fsdp or "",
        deepspeed=cfg.deepspeed or None, disable_tqdm=False,
    )
    if cfg.tower_cache:  # after TrainingArguments, which sets up torchrun's processes: each fills its share
        cache = prepare_tower_cache(cfg.tower_cache, dataset.image_paths(), cfg.image_root, model.model.vision_tower,
                                    processor.image_processor, device=args.device, bf16=bf16,
                                    batch_size=cfg.per_device_batch_size, workers=cfg.dataloader_workers)
        dataset.features = cache.read
        model.model.vision_tower = CachedFeatureTower(model.model.vision_tower)
    logger.info("vlm train: stage %s trains %s; %d samples; resume=%s; tower features %s", cfg.stage,
                ", ".join(trainable), len(dataset), resume,
                f"from {cfg.tower_cache}" if cfg.tower_cache else "computed at each step")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    check_vlm_folder(out)
    if report.events():
        logger.warning("vlm train: %s", report.summary())
    atomic_write_json(out / "train_summary.json", {
        "stage": cfg.stage, "trainable": trainable, "steps": trainer.state.global_step,
        # the Trainer's train_loss: the mean training loss over the run's steps, not the last one
        "mean_loss": next((r["train_loss"] for r in reversed(trainer.state.log_history) if "train_loss" in r), None),
        "skipped": report.counts(), "config": to_dict(cfg)})
    return out
