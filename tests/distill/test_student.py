import pytest
import torch

import eupe
from eupe.distill.checkpoint import export_student, load_student_init
from eupe.distill.student import DistillStudent
from eupe.models import ConvNeXt, Projectors


def make_student(backbone=None):
    backbone = backbone or eupe.create_model("eupe_vitt16", depth=1)
    return DistillStudent(backbone, 16, {"glob": (10, 6), "dense": (5, 5)})


def test_heads_follow_the_checkpoint_layout_with_separate_widths():
    student = make_student()
    sd = student.heads.state_dict()
    assert isinstance(student.heads, Projectors)
    assert sd["glob.cls.0.weight"].shape == (16, 192) and "glob.cls.0.bias" not in sd
    assert sd["glob.cls.3.weight"].shape == (10, 16) and sd["glob.patch.3.weight"].shape == (6, 16)
    assert {k.split(".", 2)[2] for k in sd} == {"0.weight", "1.weight", "1.bias", "3.weight"}


def test_vit_outputs_per_teacher_maps_and_normalises_inputs():
    student = make_student().eval()
    x = torch.rand(2, 3, 64, 48)
    out = student(x)
    assert out["glob"][0].shape == (2, 10) and out["glob"][1].shape == (2, 6, 4, 3)
    feats = student.backbone.forward_features((x - student.mean) / student.std)
    expected = student.heads["dense"]["patch"](feats["x_norm_patchtokens"])  # token-wise head, row-major grid
    assert torch.allclose(out["dense"][1].flatten(2).transpose(1, 2), expected, atol=1e-5)


def test_convnext_grid_uses_stride_32():
    student = make_student(ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
    assert student(torch.rand(1, 3, 64, 96))["glob"][1].shape == (1, 6, 2, 3)


def test_export_loads_with_eupe_load_and_hub(tmp_path):
    student = make_student()
    norms = {"glob.cls.mean": torch.zeros(10)}
    path, norms_path = export_student(tmp_path / "student.pt", student.state_dict(), norms)
    sd = torch.load(path, weights_only=True)
    assert "cls_token" in sd and "projectors.glob.patch.3.weight" in sd and not any(k.startswith("heads") for k in sd)
    model = eupe.load("eupe_vitt16", weights=str(path), depth=1)
    assert {k for k in model.state_dict() if k.startswith("projectors.")} == {k for k in sd if k.startswith("projectors.")}
    assert torch.equal(model.cls_token, student.backbone.cls_token)
    hub = torch.hub.load(str(eupe.__path__[0] + "/.."), "eupe_vitt16", source="local", weights=str(path), depth=1)
    assert torch.equal(hub.storage_tokens, student.backbone.storage_tokens)
    assert torch.load(norms_path, weights_only=True).keys() == norms.keys()
    other = make_student()
    assert load_student_init(other, path) == []
    assert torch.equal(other.heads["glob"]["cls"][0].weight, student.heads["glob"]["cls"][0].weight)


def test_init_keeps_fresh_heads_when_teachers_differ(tmp_path):
    student = make_student()
    path, _ = export_student(tmp_path / "s.pt", student.state_dict(), {})
    other = DistillStudent(eupe.create_model("eupe_vitt16", depth=1), 16, {"glob": (10, 6), "new": (3, 3)})
    fresh = load_student_init(other, path)
    assert fresh and all(k.startswith("new.") for k in fresh)
    with pytest.raises(FileNotFoundError, match="student.init"):
        load_student_init(other, tmp_path / "missing.pt")


def test_token_count_that_is_not_the_grid_is_a_clear_error():
    from eupe.distill.student import token_grid

    backbone = eupe.create_model("eupe_vitt16", depth=1)
    assert token_grid(backbone, 64, 48, 12) == (4, 3)
    with pytest.raises(RuntimeError, match="not a 4x3 grid"):
        token_grid(backbone, 64, 48, 13)
