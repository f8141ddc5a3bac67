"""Tiny teachers, in-memory view sources and configs for the distillation tests."""

from __future__ import annotations

import torch
from torch import Tensor

from eupe.models import VisionTransformer
from eupe.teachers.common import finalise
from eupe.teachers.eupe_teacher import BackboneTeacher


def tiny_backbone(seed: int, dim: int = 32, depth: int = 1) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=2, n_storage_tokens=4, mask_k_bias=True,
                             layerscale_init=1.0, norm_layer="layernormbf16")


def tiny_teacher(name: str, seed: int, dim: int = 32, input_size: int = 32) -> BackboneTeacher:
    """A frozen random ViT behind the teacher interface (stands in for a real teacher in fast tests)."""
    return finalise(BackboneTeacher(name, tiny_backbone(seed, dim), input_size=input_size))


class TensorViews:
    """In-memory images; view ``(index, view, seed)`` = a seeded random crop + flip, resized to ``size``."""

    def __init__(self, images: Tensor, size: int, bad: set[int] = frozenset()) -> None:
        self.images, self.size, self.bad = images, size, set(bad)

    def __len__(self) -> int:
        return len(self.images)

    def view(self, index: int, view: int, seed: int) -> Tensor:
        from eupe.data.images import ImageDecodeError

        if index in self.bad:
            raise ImageDecodeError(f"mem://{index}", "corrupt image: test")
        g = torch.Generator().manual_seed(seed)
        img = self.images[index]
        h = img.shape[-1]
        side = int(torch.randint(h // 2, h + 1, (), generator=g))
        y, x = (int(torch.randint(0, h - side + 1, (), generator=g)) for _ in range(2))
        crop = img[:, y:y + side, x:x + side]
        if torch.rand((), generator=g) < 0.5:
            crop = crop.flip(-1)
        return torch.nn.functional.interpolate(crop[None], size=(self.size, self.size), mode="bilinear",
                                               align_corners=False)[0].clamp(0, 1)


def random_images(n: int, size: int = 48, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


TINY_STUDENT = dict(model="eupe_vitt16", arch={"embed_dim": 32, "depth": 1, "num_heads": 2}, head_hidden_dim=32)


def tiny_overrides(out_dir, **extra) -> list[str]:
    """Overrides making any shipped config a seconds-long CPU run."""
    items = {
        "student.model": "eupe_vitt16", "student.arch": "{embed_dim: 32, depth: 1, num_heads: 2}",
        "student.head_hidden_dim": 32, "data.augment.size": 32, "data.student_scales": "[32]",
        "data.teacher_scales": "[]", "train.global_batch_size": 4, "train.iterations": 3,
        "train.norm_iterations": 2, "train.warmup_iterations": 1, "output.dir": str(out_dir),
        "output.progress": "false", "output.tensorboard": "false", "train.device": "cpu", "train.amp": "fp32",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]
