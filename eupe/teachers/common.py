"""Helpers shared by the teacher kinds: optional imports, package folders, freezing, probing and grid reshaping."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.optional import MissingDependencyError, require
from ..utils.optional import package_dir as find_package_dir
from .base import Teacher, TeacherOutput


class TeacherError(RuntimeError):
    """A teacher that cannot be built or whose outputs do not fit the teacher interface."""


class MissingTeacherDependency(TeacherError, MissingDependencyError):
    """An optional package that a teacher kind needs is not installed."""


def import_optional(module: str, install: str, *, teacher: str) -> ModuleType:
    """Imports ``module`` or raises :class:`MissingTeacherDependency` saying what to install."""
    return require(module, f"Teacher {teacher!r}", install=install, error=MissingTeacherDependency)


def package_dir(package: str, install: str, *, teacher: str) -> Path:
    """Folder of an installed package, found without importing it (its ``__init__`` may pull heavy deps)."""
    return find_package_dir(package, f"Teacher {teacher!r}", install=install, error=MissingTeacherDependency)


def packaged_file(package: str, relative: str, install: str, *, teacher: str) -> Path:
    """A data file shipped inside an installed package; a clear error when the package or file is missing."""
    path = package_dir(package, install, teacher=teacher) / relative
    if not path.is_file():
        raise TeacherError(
            f"Teacher {teacher!r}: the package '{package}' is installed but lacks {relative}; "
            f"reinstall it with: {install}"
        )
    return path


def resolve_callable(target: str, *, teacher: str) -> Any:
    """``'package.module:attr.sub'`` -> the object it names."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise TeacherError(
            f"Teacher {teacher!r}: model {target!r} must be an import path 'package.module:factory'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise TeacherError(f"Teacher {teacher!r}: cannot import module {module_name!r} of {target!r} ({err})") from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise TeacherError(f"Teacher {teacher!r}: {module_name!r} has no attribute {attr_path!r} ({target!r})")
        obj = getattr(obj, part)
    return obj


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter: teachers never train."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def finalise(teacher: Teacher) -> Teacher:
    """Freezes ``teacher`` and sets ``summary_dim``/``patch_dim`` from one probe forward at its native size.

    Probing at build time also surfaces shape problems (e.g. tokens that do not form a grid) immediately, with
    the teacher's name, instead of in the first training step.
    """
    freeze(teacher)
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    out = teacher(torch.zeros(1, 3, *teacher.input_size, device=device))
    check_output(out, teacher.name)
    teacher.summary_dim = out.summary.shape[1]
    teacher.patch_dim = out.patches.shape[1]
    return teacher


def check_output(out: TeacherOutput, teacher: str) -> None:
    """Raises :class:`TeacherError` unless ``out`` is ``summary [B, D]`` and ``patches [B, D_p, h, w]``."""
    s, p = out.summary, out.patches
    if s.ndim != 2 or p.ndim != 4 or s.shape[0] != p.shape[0]:
        raise TeacherError(
            f"Teacher {teacher!r} returned summary {tuple(s.shape)} and patches {tuple(p.shape)}; "
            f"expected [B, D] and [B, D_p, h, w]"
        )


def global_pool(feature_map: Tensor) -> Tensor:
    """``[B, C, h, w]`` -> ``[B, C]`` by averaging over space."""
    return feature_map.mean(dim=(2, 3))


def tokens_to_grid(tokens: Tensor, teacher: str, grid: tuple[int, int] | None = None) -> Tensor:
    """Patch tokens ``[B, N, D]`` (any leading prefix tokens are dropped) -> ``[B, D, h, w]``.

    With ``grid`` the last ``h*w`` tokens are the patches; without it the patch count must be a square after
    dropping up to 16 prefix tokens (class/register tokens). A ``[B, C, h, w]`` input is returned unchanged.
    Anything else raises :class:`TeacherError` naming the teacher and the shape.
    """
    if tokens.ndim == 4:
        return tokens
    if tokens.ndim == 3:
        b, n, d = tokens.shape
        if grid is None:
            grid = _square_grid(n)
        if grid is not None and 0 < grid[0] * grid[1] <= n:
            h, w = grid
            return tokens[:, n - h * w :].transpose(1, 2).reshape(b, d, h, w)
    raise TeacherError(
        f"Teacher {teacher!r} produced features of shape {tuple(tokens.shape)}, which cannot be reshaped to a "
        f"[B, D, h, w] patch grid" + (f" of {grid[0]}x{grid[1]}" if grid else "")
        + "; choose a layer/output with spatial tokens (e.g. patch_layer) or set input_size to a multiple of the "
        "patch size"
    )


def _square_grid(n: int, max_prefix: int = 16) -> tuple[int, int] | None:
    for prefix in range(min(max_prefix, n - 1) + 1):
        side = math.isqrt(n - prefix)
        if side * side == n - prefix and side > 0:
            return side, side
    return None
