"""Any ``timm`` model as a teacher (optional dependency, imported only when such a teacher is built)."""

from __future__ import annotations

from torch import Tensor

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .base import Teacher
from .common import finalise, import_optional
from .feature_map import load_network
from .spec import TeacherSpec
from .tokens import TokenTeacher, as_int_size

INSTALL = "pip install timm (it needs a working torchvision)"


class TimmTeacher(TokenTeacher):
    """Tokens/maps from ``forward_features``; own summary = ``forward_head(..., pre_logits=True)``."""

    def extract(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        feats = self.network.forward_features(x)
        own = self.network.forward_head(feats, pre_logits=True)
        channels = getattr(self.network, "num_features", None)
        if feats.ndim == 4 and feats.shape[1] != channels and feats.shape[-1] == channels:
            feats = feats.permute(0, 3, 1, 2)  # NHWC models (Swin, ...) -> NCHW
        return own, feats


def build_timm_teacher(spec: TeacherSpec) -> Teacher:
    """``timm.create_model(spec.model)``; ``weights`` = a state dict loaded strictly, else timm's pretrained."""
    name = spec.display_name
    timm = import_optional("timm", INSTALL, teacher=name)
    kwargs = {"num_classes": 0, **spec.model_kwargs}
    network = timm.create_model(spec.model, pretrained=spec.weights is None, **kwargs)
    if spec.weights is not None:
        load_network(network, spec.weights, teacher=name)
    cfg = dict(getattr(network, "pretrained_cfg", None) or {})
    patch_embed = getattr(network, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    teacher = TimmTeacher(name, network, input_size=spec.input_size or as_int_size(cfg.get("input_size"), 224),
                          mean=spec.mean or cfg.get("mean", IMAGENET_MEAN),
                          std=spec.std or cfg.get("std", IMAGENET_STD), patch_size=as_int_size(patch, 0) or None,
                          summary=spec.summary, autocast=spec.autocast)
    return finalise(teacher)
