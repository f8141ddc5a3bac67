"""The teacher registry and ``build_teacher(spec)``: from a :class:`TeacherSpec` (YAML) to a frozen :class:`Teacher`.

Kinds are registered by name, as timm registers models: ``register_teacher("my_cnn", build_my_cnn,
fields={"patch_layer"})`` makes ``TeacherSpec(kind="my_cnn")`` (and ``kind: my_cnn`` in a distillation config)
build through ``build_my_cnn(spec)``. The built-in kinds are registered as ``"module:function"`` paths, imported
on first use, so optional libraries (timm, open_clip, transformers) stay optional.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .base import Teacher
from .common import TeacherError
from .spec import TeacherSpec

logger = logging.getLogger(__name__)

TeacherBuilder = Callable[[TeacherSpec], Teacher]
# Spec fields every kind reads; a kind declares the others it reads when it is registered.
COMMON_FIELDS = frozenset({"kind", "name", "input_size", "mean", "std", "autocast"})
FEATURE_MAP_FIELDS = frozenset({"patch_layer", "summary_layer"})
MODEL_FIELDS = frozenset({"model", "weights", "summary", "model_kwargs"})


@dataclass(frozen=True)
class TeacherKind:
    builder: TeacherBuilder | str  # a callable, or "package.module:function" imported on first use
    fields: frozenset[str]  # every spec field this kind reads; setting any other one is an error

    def resolve(self) -> TeacherBuilder:
        if callable(self.builder):
            return self.builder
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


_KINDS: dict[str, TeacherKind] = {}


def register_teacher(kind: str, builder: TeacherBuilder | str, *, fields: Iterable[str] = (),
                     replace: bool = False) -> None:
    """Registers teacher ``kind``: ``builder(spec) -> Teacher`` (e.g. ending in :func:`finalise`).

    ``fields``: the :class:`TeacherSpec` fields it reads beyond ``kind``, ``name``, ``input_size``, ``mean``,
    ``std`` and ``autocast``. ``replace=True`` overrides an existing kind (otherwise a second registration is an
    error, so two plugins cannot silently shadow each other).
    """
    unknown = set(fields) - {f.name for f in dataclasses.fields(TeacherSpec)}
    if unknown:
        raise ValueError(f"register_teacher({kind!r}): {sorted(unknown)} are not TeacherSpec fields")
    if kind in _KINDS and not replace:
        raise ValueError(f"Teacher kind {kind!r} is already registered; pass replace=True to override it")
    _KINDS[kind] = TeacherKind(builder, COMMON_FIELDS | frozenset(fields))


def teacher_kinds() -> list[str]:
    """The registered teacher kinds, in registration order."""
    return list(_KINDS)


register_teacher("eupe", "eupe.teachers.eupe_teacher:build_eupe_teacher", fields=MODEL_FIELDS)
register_teacher("timm", "eupe.teachers.timm_teacher:build_timm_teacher", fields=MODEL_FIELDS)
register_teacher("open_clip", "eupe.teachers.open_clip_teacher:build_open_clip_teacher", fields=MODEL_FIELDS)
register_teacher("hf", "eupe.teachers.hf_teacher:build_hf_teacher", fields={"model", "summary", "model_kwargs"})
register_teacher("torch_cnn", "eupe.teachers.feature_map:build_torch_cnn_teacher",
                 fields=FEATURE_MAP_FIELDS | {"model", "weights", "call", "model_kwargs"})


def _kind(spec: TeacherSpec) -> TeacherKind:
    if spec.kind not in _KINDS:
        raise TeacherError(f"Unknown teacher kind {spec.kind!r}; valid kinds are {teacher_kinds()} (register "
                           "others with eupe.teachers.register_teacher)")
    kind = _KINDS[spec.kind]
    defaults = TeacherSpec()
    unused = [f.name for f in dataclasses.fields(spec)
              if f.name not in kind.fields and getattr(spec, f.name) != getattr(defaults, f.name)]
    if unused:
        raise TeacherError(f"Teacher {spec.display_name!r} of kind {spec.kind!r} does not use {unused}; "
                           f"remove them (fields of this kind: {sorted(kind.fields)})")
    return kind


def build_teacher(spec: TeacherSpec) -> Teacher:
    """Builds, loads (strictly) and freezes the teacher ``spec`` describes; dims are probed at build time."""
    teacher = _kind(spec).resolve()(spec)
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
