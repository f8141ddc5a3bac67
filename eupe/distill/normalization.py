"""Fixed per-coordinate standardisation of teacher outputs (paper section 4).

Before training, the trainer feeds teacher outputs of a number of batches (paper: 500 iterations) to
:meth:`TeacherNormalizer.update`; :meth:`finalize` turns the accumulated sums into a mean and std per teacher,
per token type and per channel. They are then frozen and travel with the checkpoint as buffers, so a resumed run
and the exported model use exactly the same targets. Sums are float64 and can be all-reduced across ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..teachers import TeacherOutput


class TokenStats(nn.Module):
    """Running sums, then the frozen mean/std, of one ``[*, dim]`` feature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("sumsq", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def update(self, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sumsq += x.square().sum(0)

    def finalize(self, eps: float) -> None:
        if self.count <= 1:
            raise RuntimeError("Cannot measure normalisation statistics from fewer than 2 samples")
        mean = self.sum / self.count
        var = (self.sumsq / self.count - mean.square()).clamp_min(0) * (self.count / (self.count - 1))
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float() + eps)


class TeacherNormalizer(nn.Module):
    """``{teacher: {"cls": TokenStats, "patch": TokenStats}}`` plus a flag saying the statistics are final."""

    def __init__(self, teacher_dims: dict[str, tuple[int, int]], eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.stats = nn.ModuleDict(
            {t: nn.ModuleDict({"cls": TokenStats(c), "patch": TokenStats(p)}) for t, (c, p) in teacher_dims.items()}
        )
        self.register_buffer("finalized", torch.zeros((), dtype=torch.bool))

    @property
    def is_final(self) -> bool:
        return bool(self.finalized)

    def update(self, teacher: str, out: TeacherOutput) -> None:
        self.stats[teacher]["cls"].update(out.summary)
        self.stats[teacher]["patch"].update(out.patches.movedim(1, -1))  # [B, h, w, C]: per channel

    def all_reduce(self) -> None:
        """Sums the running statistics of all ranks (call before :meth:`finalize` in distributed runs)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for name, buf in self.named_buffers():
                if name.endswith(("count", ".sum", "sumsq")):
                    dist.all_reduce(buf)

    def finalize(self) -> None:
        for pair in self.stats.values():
            for stats in pair.values():
                stats.finalize(self.eps)
        self.finalized.fill_(True)

    def forward(self, teacher: str, out: TeacherOutput) -> TeacherOutput:
        """Standardised copy of ``out``: ``(y - mean) / std`` per coordinate."""
        if not self.is_final:
            raise RuntimeError("Normalisation statistics are not measured yet; call update() then finalize()")
        cls_s, patch_s = self.stats[teacher]["cls"], self.stats[teacher]["patch"]
        summary = (out.summary - cls_s.mean) / cls_s.std
        patches = (out.patches - patch_s.mean[:, None, None]) / patch_s.std[:, None, None]
        return TeacherOutput(summary, patches)

    def export(self) -> dict[str, Tensor]:
        """Flat ``{"<teacher>.<cls|patch>.<mean|std>": tensor}`` of the frozen statistics."""
        return {
            f"{t}.{kind}.{field}": getattr(stats, field).detach().cpu().clone()
            for t, pair in self.stats.items()
            for kind, stats in pair.items()
            for field in ("mean", "std")
        }
