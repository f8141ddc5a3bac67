"""``TeacherSpec``: the YAML-configurable description of one teacher (a ``teachers:`` list entry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TeacherSpec:
    """What to build and how to read its outputs; fields a kind does not use must stay at their defaults.

    kind: a registered kind (``eupe.teachers.teacher_kinds()``: eupe, timm, open_clip, hf, torch_cnn, and any
        added with ``register_teacher``).
    name: key of this teacher in losses, projectors and logs (default: ``model`` or ``kind``).
    model: ``eupe``: registered model name (``eupe_proxy_vitg16``, ``vith16plus``...); ``timm``: timm model name;
        ``open_clip``: architecture; ``hf``: hub id or local folder; ``torch_cnn``: ``package.module:factory``.
    weights: checkpoint path/URL/``hf://`` (``eupe``, ``timm``, ``torch_cnn``), or open_clip ``pretrained`` tag or
        file. ``None`` takes the library's own pretrained weights (``timm``/``hf``/``eupe`` released files).
    input_size: native resolution the crop is resized to (``None``: the kind's default).
    mean / std: input normalisation override (RGB, for [0, 1] inputs).
    summary: ``auto`` (the model's own summary), ``cls`` (class token) or ``mean`` (average of the patch grid).
    patch_layer: dotted submodule name whose output is the patch grid (``torch_cnn``; ``hed``: ``block1``..``block5``).
    summary_layer: submodule pooled into the summary (``torch_cnn``; default: the patch map).
    call: ``torch_cnn``: method or submodule of the network run on the input (``forward``, ``features``...).
    model_kwargs: extra keyword arguments for the model factory (``create_model``, ``from_pretrained``...).
    autocast: bf16 autocast where the hardware runs bf16 natively (CUDA; CPUs with AMX).
      Set false for fp32 teacher targets.
    """

    kind: str = "eupe"
    name: str = ""
    model: str = ""
    weights: str | None = None
    input_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    summary: str = "auto"
    patch_layer: str | None = None
    summary_layer: str | None = None
    call: str = "forward"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    autocast: bool = True

    @property
    def display_name(self) -> str:
        return self.name or self.model or self.kind
