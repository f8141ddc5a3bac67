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
    """``{teacher: {"cls": AdapterHead, "patch": AdapterHead}}``."""

    def __init__(self, in_dim: int, hidden_dim: int, teacher_dims: dict[str, int]) -> None:
        super().__init__(
            {
                name: nn.ModuleDict({t: AdapterHead(in_dim, hidden_dim, dim) for t in TOKEN_TYPES})
                for name, dim in teacher_dims.items()
            }
        )

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor], prefix: str = "projectors.") -> "Projectors":
        """Builds and loads heads from ``projectors.*`` tensors (e.g. a load report's ``extra_tensors``)."""
        groups: dict[str, dict[str, Tensor]] = defaultdict(dict)
        for key, value in tensors.items():
            if key.startswith(prefix):
                teacher, rest = key[len(prefix) :].split(".", 1)
                groups[teacher][rest] = value
        if not groups:
            raise ValueError(f"No '{prefix}*' tensors found; this checkpoint carries no adapter heads.")
        try:
            dims = {t: g["cls.3.weight"].shape[0] for t, g in groups.items()}
            first = next(iter(groups.values()))
            hidden, in_dim = first["cls.0.weight"].shape
        except KeyError as err:
            raise ValueError(
                f"Adapter tensors do not follow the layout '{prefix}<teacher>.<cls|patch>.{{0,1,3}}.*' "
                f"(missing {err}); found keys like {sorted(tensors)[:4]}"
            ) from None
        heads = cls(in_dim, hidden, dims)
        heads.load_state_dict({f"{t}.{k}": v for t, g in groups.items() for k, v in g.items()})
        return heads
