"""timm / open_clip / transformers adapters, run against fake library modules (the real ones are optional)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from eupe.teachers import MissingTeacherDependency, TeacherSpec, build_teacher

D, P = 16, 8  # token width, patch size


class TinyViT(nn.Module):
    """Stand-in for a library ViT: a patch conv, one class token, a projection."""

    def __init__(self, prefix: int = 1) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, D, P, P)
        self.prefix = nn.Parameter(torch.randn(1, prefix, D))
        self.proj = nn.Linear(D, 4)

    def tokens(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.prefix.expand(len(x), -1, -1), patches], dim=1)


def grid_of(tokens, h, w):
    return tokens[:, -h * w:].transpose(1, 2).reshape(len(tokens), D, h, w)


# ----------------------------------------------------------------------------------------------------- timm


class FakeTimmModel(TinyViT):
    pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    num_features = D

    def __init__(self) -> None:
        super().__init__(prefix=2)
        self.patch_embed = types.SimpleNamespace(patch_size=(P, P))

    def forward_features(self, x):
        return self.tokens(x)

    def forward_head(self, x, pre_logits=False):
        return x[:, 0] * 2


@pytest.fixture
def fake_timm(monkeypatch):
    calls = {}
    module = types.ModuleType("timm")

    def create_model(name, pretrained, **kwargs):
        calls.update(name=name, pretrained=pretrained, **kwargs)
        return FakeTimmModel()

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


def test_timm_adapter(fake_timm, tmp_path):
    torch.manual_seed(0)
    ref = FakeTimmModel()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    teacher = build_teacher(TeacherSpec(kind="timm", model="vit_fake", weights=str(tmp_path / "w.pt")))
    assert fake_timm == {"name": "vit_fake", "pretrained": False, "num_classes": 0}
    assert teacher.input_size == (32, 32) and teacher.mean.flatten().tolist() == [0.5] * 3
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.network.training
    x = torch.rand(2, 3, 32, 32)
    out = teacher(x)
    with torch.no_grad():
        tokens = ref.tokens((x - 0.5) / 0.25)
    torch.testing.assert_close(out.patches, grid_of(tokens, 4, 4))
    torch.testing.assert_close(out.summary, tokens[:, 0] * 2)  # auto = the model's own pooled head input
    cls = build_teacher(TeacherSpec(kind="timm", model="vit_fake", weights=str(tmp_path / "w.pt"), summary="cls"))
    torch.testing.assert_close(cls(x).summary, tokens[:, 0])


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(MissingTeacherDependency, match="pip install timm"):
        build_teacher(TeacherSpec(kind="timm", model="vit_small_patch16_224"))


# ------------------------------------------------------------------------------------------------ open_clip


class FakeVisual(TinyViT):
    image_size = 24
    patch_size = (P, P)
    image_mean = (0.4, 0.4, 0.4)
    image_std = (0.3, 0.3, 0.3)
    output_tokens = False

    def forward(self, x):
        tokens = self.tokens(x)
        pooled = self.proj(tokens[:, 0])
        return (pooled, tokens[:, 1:]) if self.output_tokens else pooled


def test_open_clip_adapter(monkeypatch):
    visual = FakeVisual()
    module = types.ModuleType("open_clip")
    module.create_model = lambda name, pretrained=None: types.SimpleNamespace(visual=visual)
    monkeypatch.setitem(sys.modules, "open_clip", module)
    teacher = build_teacher(TeacherSpec(kind="open_clip", model="ViT-fake", weights="fake_tag"))
    assert visual.output_tokens and teacher.input_size == (24, 24)
    assert (teacher.summary_dim, teacher.patch_dim) == (4, D)
    x = torch.rand(1, 3, 24, 24)
    out = teacher(x)
    with torch.no_grad():
        tokens = visual.tokens((x - 0.4) / 0.3)
    torch.testing.assert_close(out.patches, grid_of(tokens, 3, 3))
    torch.testing.assert_close(out.summary, visual.proj(tokens[:, 0]))


def test_open_clip_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingTeacherDependency, match="pip install open_clip_torch"):
        build_teacher(TeacherSpec(kind="open_clip", model="ViT-B-16"))


# --------------------------------------------------------------------------------------------- transformers


class FakeHFVision(TinyViT):
    def __init__(self) -> None:
        super().__init__(prefix=5)  # class token + 4 registers
        self.config = types.SimpleNamespace(image_size=32, patch_size=P)
        self.seen_kwargs = {}

    def forward(self, pixel_values, **kwargs):
        self.seen_kwargs = kwargs
        tokens = self.tokens(pixel_values)
        return types.SimpleNamespace(last_hidden_state=tokens, pooler_output=None)


def fake_transformers(vision):
    module = types.ModuleType("transformers")

    class AutoModel:
        @staticmethod
        def from_pretrained(name):
            return types.SimpleNamespace(vision_model=vision, config=None)

    class AutoImageProcessor:
        @staticmethod
        def from_pretrained(name):
            raise OSError("no processor")

    module.AutoModel, module.AutoImageProcessor = AutoModel, AutoImageProcessor
    return module


def test_hf_adapter_takes_vision_tower_and_drops_registers(monkeypatch):
    vision = FakeHFVision()
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers(vision))
    teacher = build_teacher(TeacherSpec(kind="hf", model="org/fake-clip", input_size=48))
    assert vision.seen_kwargs == {"interpolate_pos_encoding": True}  # 48 != native 32
    x = torch.rand(2, 3, 48, 48)
    out = teacher(x)
    with torch.no_grad():
        tokens = vision.tokens(teacher.preprocess(x))
    assert out.patches.shape == (2, D, 6, 6)
    torch.testing.assert_close(out.patches, grid_of(tokens, 6, 6))
    torch.testing.assert_close(out.summary, tokens[:, 0])  # no pooler output -> class token


def test_hf_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingTeacherDependency, match="pip install transformers"):
        build_teacher(TeacherSpec(kind="hf", model="facebook/dinov2-small"))
