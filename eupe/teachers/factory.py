"""``build_teacher(spec)``: one entry point from a :class:`TeacherSpec` (YAML) to a frozen :class:`Teacher`."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Callable, Sequence

from .base import Teacher
from .common import TeacherError
from .spec import TeacherSpec

logger = logging.getLogger(__name__)

# kind -> "module:builder"; imported on demand so optional libraries stay optional.
BUILDERS: dict[str, str] = {
    "eupe": "eupe_teacher:build_eupe_teacher",
    "timm": "timm_teacher:build_timm_teacher",
    "open_clip": "open_clip_teacher:build_open_clip_teacher",
    "hf": "hf_teacher:build_hf_teacher",
    "torch_cnn": "feature_map:build_torch_cnn_teacher",
    "efficientnet_lite2": "efficientnet_lite:build_efficientnet_lite2_teacher",
    "mobilenet_v2": "mobilenet_v2:build_mobilenet_v2_teacher",
    "hed": "hed:build_hed_teacher",
}
KINDS = tuple(BUILDERS)

_COMMON = {"kind", "name", "input_size", "mean", "std", "autocast"}
_MAPS = {"patch_layer", "summary_layer"}
# The spec fields each kind reads; setting any other field is an error rather than silently ignored.
USED_FIELDS: dict[str, set[str]] = {
    "eupe": _COMMON | {"model", "weights", "summary", "model_kwargs"},
    "timm": _COMMON | {"model", "weights", "summary", "model_kwargs"},
    "open_clip": _COMMON | {"model", "weights", "summary", "model_kwargs"},
    "hf": _COMMON | {"model", "summary", "model_kwargs"},
    "torch_cnn": _COMMON | _MAPS | {"model", "weights", "call", "model_kwargs"},
    "efficientnet_lite2": _COMMON | _MAPS,
    "mobilenet_v2": _COMMON | _MAPS,
    "hed": _COMMON | _MAPS,
}


def _check_fields(spec: TeacherSpec) -> None:
    defaults = TeacherSpec()
    unused = [f.name for f in dataclasses.fields(spec)
              if f.name not in USED_FIELDS[spec.kind] and getattr(spec, f.name) != getattr(defaults, f.name)]
    if unused:
        raise TeacherError(f"Teacher {spec.display_name!r} of kind {spec.kind!r} does not use {unused}; "
                           f"remove them (fields of this kind: {sorted(USED_FIELDS[spec.kind])})")


def _builder(kind: str) -> Callable[[TeacherSpec], Teacher]:
    module, _, attr = BUILDERS[kind].partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


def build_teacher(spec: TeacherSpec) -> Teacher:
    """Builds, loads (strictly) and freezes the teacher ``spec`` describes; dims are probed at build time."""
    if spec.kind not in BUILDERS:
        raise TeacherError(f"Unknown teacher kind {spec.kind!r}; valid kinds are {list(BUILDERS)}")
    _check_fields(spec)
    teacher = _builder(spec.kind)(spec)
    logger.info("teacher %s (%s): input %s, summary %d-d, patches %d-d", teacher.name, spec.kind,
                teacher.input_size, teacher.summary_dim, teacher.patch_dim)
    return teacher


def build_teachers(specs: Sequence[TeacherSpec]) -> dict[str, Teacher]:
    """Several teachers keyed by name (names must be unique: they key the losses and projector heads)."""
    teachers: dict[str, Teacher] = {}
    for spec in specs:
        if spec.display_name in teachers:
            raise TeacherError(f"Two teachers are named {spec.display_name!r}; give each spec a distinct name")
        teachers[spec.display_name] = build_teacher(spec)
    return teachers
