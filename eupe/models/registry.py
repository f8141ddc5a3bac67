"""Model registry: names -> (builder, architecture arguments, pretrained-weights config)."""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class PretrainedCfg:
    """Where released weights live and how inputs must be prepared for them."""

    hf_hub_id: str | None = None
    filename: str | None = None
    input_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    license: str = "FAIR Noncommercial Research License"

    @property
    def default_source(self) -> str | None:
        """The ``hf://`` reference of the released file, if there is one."""
        if self.hf_hub_id is None or self.filename is None:
            return None
        return f"hf://{self.hf_hub_id}/{self.filename}"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    arch: dict[str, Any] = field(default_factory=dict)
    pretrained: PretrainedCfg | None = None
    description: str = ""

    def build(self, **overrides: Any) -> nn.Module:
        """The model with ``overrides`` replacing architecture arguments; an argument the builder does not take
        (a typo such as ``deepth``) is a ``ValueError`` listing the valid ones."""
        parameters = inspect.signature(self.builder).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            unknown = sorted(set(overrides) - set(parameters))
            if unknown:
                raise ValueError(f"{self.name} has no architecture argument {', '.join(unknown)}; valid ones: "
                                 f"{', '.join(sorted(parameters))}")
        return self.builder(**{**self.arch, **overrides})


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    arch: dict[str, Any],
    *,
    pretrained: PretrainedCfg | None = None,
    description: str = "",
) -> ModelEntry:
    if name in _REGISTRY:
        raise ValueError(f"Model {name!r} is already registered")
    entry = _REGISTRY[name] = ModelEntry(name, builder, dict(arch), pretrained, description)
    return entry


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[-1]}*") or list(_REGISTRY)
        raise KeyError(f"Unknown model {name!r}. Known models: {', '.join(sorted(close))}") from None


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern``; ``pretrained`` keeps released ones only."""
    names = [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]
    if pretrained:
        names = [n for n in names if _REGISTRY[n].pretrained is not None]
    return sorted(names)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Builds a randomly initialised model; ``overrides`` replace architecture arguments."""
    return get_model_entry(name).build(**overrides)
