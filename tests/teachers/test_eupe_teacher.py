"""Teachers from this package's backbones (stage-1 proxies, EUPE/DINOv3 checkpoints), built from a tiny file."""

from __future__ import annotations

import pytest
import torch

import eupe
from eupe.teachers import TeacherSpec, build_teacher


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    model = eupe.create_model("eupe_vitt16", depth=2)
    path = tmp_path_factory.mktemp("w") / "vit.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_vit_teacher_outputs_class_token_and_patch_grid(vit_file):
    model, path = vit_file
    teacher = build_teacher(TeacherSpec(kind="eupe", name="proxy", model="eupe_vitt16", weights=str(path),
                                        input_size=64, model_kwargs={"depth": 2}))
    assert teacher.name == "proxy" and teacher.summary_dim == teacher.patch_dim == model.embed_dim
    x = torch.rand(2, 3, 32, 32)
    out = teacher(x)
    with torch.no_grad():
        ref = model.forward_features(teacher.preprocess(x))
    torch.testing.assert_close(out.summary, ref["x_norm_clstoken"])
    grid = ref["x_norm_patchtokens"].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.patches, grid)


def test_convnext_teacher_mean_summary(tmp_path):
    arch = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}
    model = eupe.create_model("eupe_convnext_tiny", **arch).eval()
    torch.save(model.state_dict(), tmp_path / "cnx.pt")
    teacher = build_teacher(TeacherSpec(kind="eupe", model="eupe_convnext_tiny", weights=str(tmp_path / "cnx.pt"),
                                        input_size=96, summary="mean", model_kwargs=arch))
    out = teacher(torch.rand(1, 3, 40, 40))
    assert out.patches.shape == (1, 64, 3, 3)
    torch.testing.assert_close(out.summary, out.patches.mean(dim=(2, 3)))

