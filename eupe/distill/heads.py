"""Student-side adapter heads: per teacher, one head for the class token and one for the patch tokens.

A teacher's summary and patch widths may differ (a CNN's pooled vector vs. one of its stage maps), so each head
gets its own output width. The container is :class:`eupe.models.Projectors`, so the state-dict keys follow the
checkpoint layout ``projectors.<teacher>.<cls|patch>.{0,1,3}.*``.
"""

from __future__ import annotations

from torch import nn

from ..models import AdapterHead, Projectors


def build_heads(in_dim: int, hidden_dim: int, teacher_dims: dict[str, tuple[int, int]]) -> Projectors:
    """``teacher_dims``: ``{teacher: (summary_dim, patch_dim)}`` -> heads mapping ``in_dim`` to each width."""
    heads = Projectors(in_dim, hidden_dim, {})
    for name, (cls_dim, patch_dim) in teacher_dims.items():
        heads[name] = nn.ModuleDict(
            {"cls": AdapterHead(in_dim, hidden_dim, cls_dim), "patch": AdapterHead(in_dim, hidden_dim, patch_dim)}
        )
    return heads
