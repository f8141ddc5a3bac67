"""Base for teachers from other libraries (timm, open_clip, transformers): token or map outputs -> the interface."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .base import Teacher, TeacherOutput
from .common import TeacherError, tokens_to_grid

SUMMARY_MODES = ("auto", "cls", "mean")


class TokenTeacher(Teacher):
    """Subclasses implement :meth:`extract`: ``x -> (the model's own summary or None, tokens [B,N,D] or map)``.

    ``summary``: ``auto`` = the model's own summary (pooled/projected output) when it has one, else the class
    token, else the patch mean; ``cls`` = first token; ``mean`` = average of the patch grid.
    """

    def __init__(self, name: str, network: nn.Module, *, input_size: int | tuple[int, int], mean: Sequence[float],
                 std: Sequence[float], patch_size: int | None, summary: str = "auto", autocast: bool = True) -> None:
        super().__init__(name, input_size=input_size, mean=mean, std=std, autocast=autocast)
        if summary not in SUMMARY_MODES:
            raise TeacherError(f"Teacher {name!r}: summary must be one of {SUMMARY_MODES}, got {summary!r}")
        self.network = network
        self.patch_size = patch_size
        self.summary_mode = summary

    def extract(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        raise NotImplementedError

    def features(self, x: Tensor) -> TeacherOutput:
        own, feats = self.extract(x)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size) if self.patch_size else None
        patches = tokens_to_grid(feats, self.name, grid)
        has_prefix = feats.ndim == 3 and feats.shape[1] > patches.shape[2] * patches.shape[3]
        if self.summary_mode == "cls" or (self.summary_mode == "auto" and own is None and has_prefix):
            if not has_prefix:
                raise TeacherError(f"Teacher {self.name!r}: summary 'cls' needs a class token, but the output "
                                   f"{tuple(feats.shape)} has none; use summary: mean")
            summary = feats[:, 0]
        elif self.summary_mode == "mean" or own is None:
            summary = patches.mean(dim=(2, 3))
        else:
            summary = own.flatten(1)
        return TeacherOutput(summary, patches)


def as_int_size(value: int | Sequence[int] | None, default: int) -> int:
    """Library configs give sizes as ints, pairs or ``(C, H, W)``; the teacher uses the (square) height."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    return int(value[-2] if len(value) == 3 else value[0])
