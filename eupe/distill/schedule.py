"""Learning-rate schedule (linear warm-up, then cosine decay) and the batch-size scaling of the base LR."""

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


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR of (0-based) ``step``: linear warm-up from ~0 to ``peak_lr``, then cosine to ``peak_lr * min_lr_ratio``."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = peak_lr * min_lr_ratio
    return floor + 0.5 * (peak_lr - floor) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
