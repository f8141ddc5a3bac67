"""Numerical checks shared by every exporter: parity with eager PyTorch and similarity on real photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.optional import require
from .prepare import eager_reference

# scikit-image's bundled photographs (real RGB scenes, no download needed).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")

Runner = Callable[[Tensor], Sequence[Tensor | np.ndarray]]


class VerificationError(RuntimeError):
    """An exported artefact whose outputs do not match eager PyTorch within tolerance."""


@dataclass
class Check:
    """One comparison: what was compared, the measured value and whether it passed its threshold."""

    name: str
    value: float
    threshold: float
    higher_is_better: bool = False

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def __str__(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return f"{self.name}: {self.value:.3g} ({'ok' if self.passed else 'FAILED'}, needs {op} {self.threshold:g})"


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def raise_if_failed(self, what: str) -> None:
        failed = [str(c) for c in self.checks if not c.passed]
        if failed:
            raise VerificationError(f"{what} does not match eager PyTorch: " + "; ".join(failed))

    def __str__(self) -> str:
        return "\n".join(str(c) for c in self.checks)


def _as_tensors(outputs: Sequence[Tensor | np.ndarray]) -> list[Tensor]:
    return [torch.as_tensor(np.asarray(o)) if not isinstance(o, Tensor) else o.detach() for o in outputs]


def max_abs_diff(a: Sequence[Tensor | np.ndarray], b: Sequence[Tensor | np.ndarray]) -> float:
    """Largest absolute difference over all paired outputs (shapes must agree)."""
    ta, tb = _as_tensors(a), _as_tensors(b)
    if len(ta) != len(tb):
        raise VerificationError(f"Exported model returns {len(ta)} outputs, eager returns {len(tb)}")
    worst = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            raise VerificationError(f"Output shape {tuple(x.shape)} differs from eager {tuple(y.shape)}")
        if x.numel():
            worst = max(worst, float((x.float() - y.float()).abs().max()))
    return worst


def min_cosine(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Smallest per-row cosine similarity between two ``[B, ..., D]`` arrays (compared over the last axis)."""
    ta, tb = _as_tensors([a, b])
    return float(F.cosine_similarity(ta.float().flatten(0, -2), tb.float().flatten(0, -2), dim=-1).min())


def parity_check(
    reference: Runner,
    runner: Runner,
    sizes: Sequence[tuple[int, int]],
    *,
    atol: float = 1e-4,
    batch: int = 2,
    label: str = "export",
) -> VerificationReport:
    """Max |exported - eager| on random inputs of each size (batch ``batch``, so a dynamic batch is exercised)."""
    report = VerificationReport()
    gen = torch.Generator().manual_seed(0)
    for h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=gen)
        with torch.inference_mode():
            expected = reference(x)
        report.checks.append(Check(f"{label} max|diff| at {batch}x3x{h}x{w}", max_abs_diff(runner(x), expected), atol))
    return report


def verify_export(
    model: nn.Module, runner: Runner, sizes: Sequence[tuple[int, int]], *, what: str, label: str,
    storage_tokens: bool = False, atol: float = 1e-4, batch: int = 2,
) -> VerificationReport:
    """:func:`parity_check` of an exported artefact (``runner``) against ``model`` as given; raises
    :class:`VerificationError` naming ``what`` when any size differs by more than ``atol``."""
    report = parity_check(eager_reference(model, storage_tokens), runner, sizes, atol=atol, batch=batch, label=label)
    report.raise_if_failed(what)
    return report


def sample_images(size: int = 256, count: int = 4) -> Tensor:
    """``[count, 3, size, size]`` normalised real photos from scikit-image (for quantisation quality checks)."""
    skdata = require("skimage.data", "The int8 quality check on real photos")
    from ..data import make_transform

    transform = make_transform(size)
    images = []
    for name in SAMPLE_PHOTOS[:count]:
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        images.append(transform(img[..., :3]))
    return torch.stack(images)


def similarity_check(
    reference: Runner, runner: Runner, images: Tensor, *, threshold: float = 0.99, label: str = "int8"
) -> VerificationReport:
    """Cosine similarity of class tokens and of patch tokens between ``runner`` and the fp32 ``reference``."""
    with torch.inference_mode():
        expected = _as_tensors(reference(images))
    got = _as_tensors(runner(images))
    return VerificationReport([
        Check(f"{label} class-token cosine (min over {len(images)} photos)", min_cosine(got[0], expected[0]),
              threshold, higher_is_better=True),
        Check(f"{label} patch-token cosine (min)", min_cosine(got[1], expected[1]), threshold - 0.04,
              higher_is_better=True),
    ])
