"""Adapter heads that map student tokens into a teacher's feature space (the checkpoints' ``projectors.*``).

One head per teacher and token type: ``Linear(no bias) -> LayerNorm -> GELU -> Linear(no bias)``. This package
stores them as ``projectors.<teacher>.<cls|patch>.{0,1,3}.*``; :meth:`Projectors.from_state_dict` rebuilds the
modules from such tensors, inferring every width from the shapes.
"""

from __future__ import annotations

from collections import defaultdict

from torch import Tensor, nn

TOKEN_TYPES = ("cls", "patch")


class AdapterHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )

    @property
    def out_dim(self) -> int:
        return self[3].out_features


class Projectors(nn.ModuleDict):
    """``{teacher: {"cls": AdapterHead, "patch": AdapterHead}}``; empty on a freshly built backbone.

    Every backbone holds one as ``model.projectors``, so the heads move with ``.to()`` and are saved by
    ``state_dict()`` under the checkpoints' ``projectors.<teacher>.<cls|patch>.*`` keys.
    """

    @classmethod
    def build(cls, in_dim: int, hidden_dim: int, teacher_dims: dict[str, int | tuple[int, int]]) -> Projectors:
        """New heads from ``in_dim`` student features to each teacher's width.

        ``teacher_dims`` gives each teacher's output width, or ``(summary_dim, patch_dim)`` when its summary vector
        and patch features differ in width (e.g. a CNN's pooled vector and one of its stage maps).
        """
        heads = cls()
        for name, dims in teacher_dims.items():
            cls_dim, patch_dim = (dims, dims) if isinstance(dims, int) else dims
            heads[name] = nn.ModuleDict({"cls": AdapterHead(in_dim, hidden_dim, cls_dim),
                                         "patch": AdapterHead(in_dim, hidden_dim, patch_dim)})
        return heads

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor], prefix: str = "projectors.") -> Projectors:
        """Builds and loads heads from ``projectors.*`` tensors; every width is read from the tensors' shapes."""
        groups: dict[str, dict[str, Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            if key.startswith(prefix):
                teacher, rest = key[len(prefix) :].split(".", 1)
                groups[teacher][rest] = value
        if not groups:
            raise ValueError(f"No '{prefix}*' tensors found; this checkpoint carries no adapter heads.")
        heads = cls()
        try:
            for teacher, group in groups.items():
                heads[teacher] = nn.ModuleDict({
                    kind: AdapterHead(group[f"{kind}.0.weight"].shape[1], group[f"{kind}.0.weight"].shape[0],
                                      group[f"{kind}.3.weight"].shape[0])
                    for kind in TOKEN_TYPES
                })
        except KeyError as err:
            raise ValueError(
                f"Adapter tensors do not follow the layout '{prefix}<teacher>.<cls|patch>.{{0,1,3}}.*' "
                f"(missing {err}); found keys like {sorted(tensors)[:4]}"
            ) from None
        heads.load_state_dict({f"{t}.{k}": v for t, g in groups.items() for k, v in g.items()})
        return heads
