"""An ``open_clip`` image tower as a teacher (optional dependency, imported only when such a teacher is built)."""

from __future__ import annotations

from torch import Tensor

from .base import Teacher
from .common import TeacherError, finalise, import_optional
from .spec import TeacherSpec
from .tokens import TokenTeacher, as_int_size

INSTALL = "pip install open_clip_torch"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipTeacher(TokenTeacher):
    """``visual(x)`` with ``output_tokens``: own summary = the projected image embedding, patches = its tokens."""

    def extract(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        out = self.network(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TeacherError(f"Teacher {self.name!r}: the open_clip image tower returned {type(out).__name__}, "
                               f"not (embedding, tokens); only towers with output_tokens support (ViTs) work")
        return out


def build_open_clip_teacher(spec: TeacherSpec) -> Teacher:
    """``open_clip.create_model(spec.model, pretrained=spec.weights)``; its ``visual`` tower is the teacher."""
    name = spec.display_name
    open_clip = import_optional("open_clip", INSTALL, teacher=name)
    model = open_clip.create_model(spec.model, pretrained=spec.weights, **spec.model_kwargs)
    visual = model.visual
    if not hasattr(visual, "output_tokens"):
        raise TeacherError(f"Teacher {name!r}: open_clip tower {type(visual).__name__} cannot return patch tokens")
    visual.output_tokens = True
    teacher = OpenClipTeacher(
        name, visual, input_size=spec.input_size or as_int_size(getattr(visual, "image_size", None), 224),
        mean=spec.mean or getattr(visual, "image_mean", None) or OPENAI_MEAN,
        std=spec.std or getattr(visual, "image_std", None) or OPENAI_STD,
        patch_size=as_int_size(getattr(visual, "patch_size", None), 0) or None, summary=spec.summary,
        autocast=spec.autocast)
    return finalise(teacher)
