"""A Hugging Face ``transformers`` vision model as a teacher (optional dependency, imported only when built)."""

from __future__ import annotations

from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .base import Teacher
from .common import finalise, import_optional
from .spec import TeacherSpec
from .tokens import TokenTeacher, as_int_size

INSTALL = "pip install transformers"


class HFTeacher(TokenTeacher):
    """``last_hidden_state`` -> patches; own summary = ``pooler_output`` when the model has one."""

    def __init__(self, *args, interpolate: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.forward_kwargs = {"interpolate_pos_encoding": True} if interpolate else {}

    def extract(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        out = self.network(pixel_values=x, **self.forward_kwargs)
        return getattr(out, "pooler_output", None), out.last_hidden_state


def _preprocessor_stats(transformers, model_id: str) -> tuple[list[float] | None, list[float] | None]:
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):
        return None, None
    return getattr(processor, "image_mean", None), getattr(processor, "image_std", None)


def build_hf_teacher(spec: TeacherSpec) -> Teacher:
    """``AutoModel.from_pretrained(spec.model)``; CLIP/SigLIP-style models contribute their ``vision_model``."""
    name = spec.display_name
    transformers = import_optional("transformers", INSTALL, teacher=name)
    model = transformers.AutoModel.from_pretrained(spec.model, **spec.model_kwargs)
    vision: nn.Module = getattr(model, "vision_model", model)
    config = getattr(vision, "config", None) or model.config
    config = getattr(config, "vision_config", config)
    native = as_int_size(getattr(config, "image_size", None), 224)
    mean, std = (spec.mean, spec.std) if spec.mean and spec.std else _preprocessor_stats(transformers, spec.model)
    teacher = HFTeacher(name, vision, input_size=spec.input_size or native, mean=spec.mean or mean or IMAGENET_MEAN,
                        std=spec.std or std or IMAGENET_STD,
                        patch_size=as_int_size(getattr(config, "patch_size", None), 0) or None,
                        summary=spec.summary, autocast=spec.autocast,
                        interpolate=spec.input_size is not None and spec.input_size != native)
    return finalise(teacher)
