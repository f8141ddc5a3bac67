"""The learning-rate schedule of every trainer here (distillation, dense probes, VLM stages): linear warm-up,
then cosine decay; and the batch-size scaling rules of the base LR."""

from __future__ import annotations

import math

import torch

LR_SCALING_RULES = ("none", "linear_wrt_256", "sqrt_wrt_1024")


def scaled_lr(base_lr: float, global_batch: int, rule: str) -> float:
    """Peak LR from a base LR: ``none`` (base is the peak), ``linear_wrt_256`` or DINOv3's ``sqrt_wrt_1024``."""
    if rule == "none":
        return base_lr
    if rule == "linear_wrt_256":
        return base_lr * global_batch / 256
    if rule == "sqrt_wrt_1024":
        return base_lr * 4 * math.sqrt(global_batch / 1024)
    raise ValueError(f"Unknown LR scaling rule {rule!r}; choose one of {LR_SCALING_RULES}")


def warmup_cosine_phase(step: int, total_steps: int, warmup_steps: int) -> tuple[bool, float]:
    """(in warm-up?, progress in [0, 1] through that phase) of 0-based ``step``."""
    if total_steps <= 0:
        raise ValueError(f"total steps must be positive, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return True, step / warmup_steps
    return False, min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))


def warmup_cosine(step: int, total_steps: int, peak: float, warmup_steps: int, *, warmup_start: float = 0.0,
                  end: float = 0.0) -> float:
    """Value at 0-based ``step``: linear from ``warmup_start`` (step 0) to ``peak`` (step ``warmup_steps``), then a
    cosine from ``peak`` down to ``end`` (reached at ``total_steps``)."""
    warming, progress = warmup_cosine_phase(step, total_steps, warmup_steps)
    if warming:
        return warmup_start + (peak - warmup_start) * progress
    return end + (peak - end) * (1 + math.cos(math.pi * progress)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float, beta1: float | None = None) -> None:
    """Sets every parameter group's LR (and AdamW's beta1, for one-cycle momentum)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])
