"""torch_cnn teachers: strict load, hooks on named stages, preprocessing parity, frozen parameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eupe.demo.teachers.mobilenet_v2 import MobileNetV2
from eupe.loading import CheckpointError
from eupe.teachers import TeacherError, TeacherSpec, build_teacher
from eupe.teachers.feature_map import FeatureMapTeacher

FACTORY = "eupe.demo.teachers.mobilenet_v2:MobileNetV2"


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    torch.manual_seed(1)
    net = MobileNetV2(num_classes=10).eval()
    for m in net.modules():  # non-trivial BN statistics so that eval-mode BN matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "mnv2.pt"
    torch.save(net.state_dict(), path)
    return net, path


def spec(path, **kw):
    return TeacherSpec(kind="torch_cnn", name="cnn", model=FACTORY, weights=str(path), input_size=64,
                       model_kwargs={"num_classes": 10}, **kw)


def test_last_map_and_pooled_summary_match_the_network(mobilenet_weights):
    net, path = mobilenet_weights
    teacher = build_teacher(spec(path, call="features"))
    assert (teacher.summary_dim, teacher.patch_dim) == (1280, 1280)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    x = torch.rand(2, 3, 48, 40)
    out = teacher(x)
    ref_in = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False, antialias=True)
    ref_in = (ref_in - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net.features(ref_in)
    assert out.patches.shape == (2, 1280, 2, 2) and out.patches.dtype == torch.float32
    torch.testing.assert_close(out.patches, ref)
    torch.testing.assert_close(out.summary, ref.mean(dim=(2, 3)))


def test_stage_hook_selects_patch_and_summary_maps(mobilenet_weights):
    net, path = mobilenet_weights
    teacher = build_teacher(spec(path, call="features", patch_layer="features.13", summary_layer="features.18"))
    assert (teacher.summary_dim, teacher.patch_dim) == (1280, 96)
    x = torch.rand(1, 3, 64, 64)
    out = teacher(x)
    with torch.no_grad():
        ref_in = teacher.preprocess(x)
        torch.testing.assert_close(out.patches, net.features[:14](ref_in))  # stride 16
        torch.testing.assert_close(out.summary, net.features(ref_in).mean(dim=(2, 3)))
    clone = copy.deepcopy(teacher)  # e.g. one teacher per device: copies must not share hooked maps
    torch.testing.assert_close(clone(x).patches, out.patches)


def test_strict_load_rejects_incomplete_weights(mobilenet_weights, tmp_path):
    net, _ = mobilenet_weights
    state = net.state_dict()
    state.pop("features.18.1.running_var")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="missing key.*features.18.1.running_var"):
        build_teacher(spec(bad, call="features"))


def test_output_without_grid_is_one_clear_error(mobilenet_weights):
    _, path = mobilenet_weights
    with pytest.raises(TeacherError, match=r"'cnn'.*\(1, 10\)"):
        build_teacher(spec(path))  # forward() returns logits [B, 10]
    with pytest.raises(TeacherError, match="no submodule 'features.99'"):
        build_teacher(spec(path, call="features", patch_layer="features.99"))


def test_train_mode_is_refused_and_gradients_do_not_flow():
    teacher = FeatureMapTeacher("id", nn.Conv2d(3, 4, 1), input_size=8)
    teacher.train()
    assert not teacher.training
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    assert not teacher(x).patches.requires_grad
