"""Teachers from this package's own backbones: EUPE/DINOv3-format checkpoints and stage-1 proxies."""

from __future__ import annotations

from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..loading import load
from .base import Teacher, TeacherOutput
from .common import TeacherError, finalise, tokens_to_grid
from .spec import TeacherSpec

DEFAULT_INPUT_SIZE = 256  # the paper's stage-2/3 base resolution


class BackboneTeacher(Teacher):
    """Summary = ``x_norm_clstoken`` (or the patch mean), patches = ``x_norm_patchtokens`` on the grid."""

    def __init__(self, name: str, backbone: nn.Module, *, input_size: int, summary: str = "auto",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, autocast: bool = True) -> None:
        super().__init__(name, input_size=input_size, mean=mean, std=std, autocast=autocast)
        if summary not in ("auto", "cls", "mean"):
            raise TeacherError(f"Teacher {name!r}: summary must be auto, cls or mean, got {summary!r}")
        self.backbone = backbone
        self.summary_mode = summary
        self.stride = backbone.feature_stride

    def features(self, x: Tensor) -> TeacherOutput:
        out = self.backbone.forward_features(x)
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        patches = tokens_to_grid(out["x_norm_patchtokens"], self.name, grid)
        summary = patches.mean(dim=(2, 3)) if self.summary_mode == "mean" else out["x_norm_clstoken"]
        return TeacherOutput(summary, patches)


def build_eupe_teacher(spec: TeacherSpec) -> Teacher:
    """``eupe.load(spec.model, weights=spec.weights)`` wrapped as a frozen teacher."""
    if not spec.model:
        raise TeacherError("Teacher kind 'eupe' needs model: a registered name such as eupe_proxy_vitg16 "
                           "(see eupe.list_models())")
    backbone = load(spec.model, weights=spec.weights, **spec.model_kwargs)
    teacher = BackboneTeacher(spec.display_name, backbone, input_size=spec.input_size or DEFAULT_INPUT_SIZE,
                              summary=spec.summary, mean=spec.mean or IMAGENET_MEAN, std=spec.std or IMAGENET_STD,
                              autocast=spec.autocast)
    return finalise(teacher)
