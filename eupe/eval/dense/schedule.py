"""The optimiser settings of the dense probes and their warm-up + one-cycle schedule (on
:func:`eupe.utils.schedule.warmup_cosine`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...utils.schedule import set_lr, warmup_cosine
from ..settings import Rule, non_negative, positive


@dataclass
class OptimConfig:
    """AdamW and the warm-up + one-cycle schedule of the reference's dense probes."""

    lr: float = 1e-3
    weight_decay: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    # Warm-up starts at lr * warmup_ratio and rises linearly to lr.
    warmup_ratio: float = 1e-6
    # After warm-up the LR follows a cosine from lr down to lr / final_div_factor (inf: down to 0).
    final_div_factor: float = math.inf
    # [base, max] of AdamW's beta1 for one-cycle momentum (max -> base in warm-up, base -> max after); null: fixed.
    momentum: list[float] | None = None
    grad_clip: float | None = None


def optim_rules(cfg: OptimConfig) -> list[Rule]:
    """The range checks of ``optim.*`` (:func:`eupe.eval.settings.check_settings`)."""
    return [positive("optim.lr", cfg.lr), non_negative("optim.weight_decay", cfg.weight_decay),
            non_negative("optim.warmup_iters", cfg.warmup_iters), positive("optim.warmup_ratio", cfg.warmup_ratio),
            ("optim.final_div_factor", cfg.final_div_factor, cfg.final_div_factor >= 1, "must be >= 1"),
            ("optim.betas", cfg.betas, len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas),
             "must be two numbers in [0, 1)")]


class WarmupOneCycle:
    """Per-iteration LR (and optionally beta1): linear warm-up to the peak, then cosine annealing."""

    def __init__(self, cfg: OptimConfig, total_iters: int) -> None:
        if total_iters <= 0:
            raise ValueError(f"total iterations must be positive, got {total_iters}")
        self.cfg, self.total = cfg, total_iters

    def lr(self, step: int) -> float:
        cfg = self.cfg
        return warmup_cosine(step, self.total, cfg.lr, cfg.warmup_iters, warmup_start=cfg.lr * cfg.warmup_ratio,
                             end=cfg.lr / cfg.final_div_factor)

    def beta1(self, step: int) -> float | None:
        """One-cycle momentum: max -> base during warm-up, base -> max after (the mirror image of the LR)."""
        if self.cfg.momentum is None:
            return None
        base, top = self.cfg.momentum
        return warmup_cosine(step, self.total, base, self.cfg.warmup_iters, warmup_start=top, end=top)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        set_lr(optimizer, lr, self.beta1(step))
        return lr
