"""TeacherSpec from YAML, the kind registry and name uniqueness."""

from __future__ import annotations

import pytest
import torch

import eupe
import eupe.demo.teachers  # noqa: F401  (registers the demo's kinds, used by some specs below)
from eupe.config import ConfigError, load_config
from eupe.teachers import (
    TeacherError,
    TeacherSpec,
    build_teacher,
    build_teachers,
    finalise,
    register_teacher,
    teacher_kinds,
)
from eupe.teachers.feature_map import FeatureMapTeacher


def test_spec_loads_from_yaml_with_overrides(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("kind: hed\ninput_size: 128\npatch_layer: block4\nmean: [0.1, 0.2, 0.3]\n")
    spec = load_config(TeacherSpec, cfg, ["name=edges", "model_kwargs.depth=2"])
    assert spec == TeacherSpec(kind="hed", name="edges", input_size=128, patch_layer="block4",
                               mean=[0.1, 0.2, 0.3], model_kwargs={"depth": 2})
    with pytest.raises(ConfigError, match="patch_layers"):
        load_config(TeacherSpec, None, ["patch_layers=block4"])


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(TeacherError, match="valid kinds.*torch_cnn.*register_teacher"):
        build_teacher(TeacherSpec(kind="resnet"))
    assert {"eupe", "timm", "open_clip", "hf", "torch_cnn", "mobilenet_v2", "hed"} <= set(teacher_kinds())


def test_register_teacher_adds_a_kind_that_specs_and_configs_build():
    def build_tiny(spec):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 4, stride=4))
        return finalise(FeatureMapTeacher(spec.display_name, net, input_size=spec.input_size or 16,
                                          patch_layer=spec.patch_layer))

    register_teacher("tiny_test_cnn", build_tiny, fields={"patch_layer"})
    try:
        teacher = build_teacher(TeacherSpec(kind="tiny_test_cnn", name="t", input_size=32))
        assert (teacher.summary_dim, teacher.patch_dim) == (5, 5)
        with pytest.raises(TeacherError, match="does not use \\['model'\\]"):
            build_teacher(TeacherSpec(kind="tiny_test_cnn", model="x"))
        with pytest.raises(ValueError, match="already registered"):
            register_teacher("tiny_test_cnn", build_tiny)
        with pytest.raises(ValueError, match="not TeacherSpec fields"):
            register_teacher("other_cnn", build_tiny, fields={"layers"})
    finally:
        from eupe.teachers import factory

        factory._KINDS.pop("tiny_test_cnn")


def test_build_teachers_keys_by_name_and_rejects_duplicates(tmp_path):
    torch.save(eupe.create_model("eupe_vitt16", depth=1).state_dict(), tmp_path / "v.pt")
    spec = TeacherSpec(kind="eupe", model="eupe_vitt16", weights=str(tmp_path / "v.pt"), input_size=32,
                       model_kwargs={"depth": 1})
    teachers = build_teachers([spec, TeacherSpec(**{**spec.__dict__, "name": "second"})])
    assert list(teachers) == ["eupe_vitt16", "second"]
    with pytest.raises(TeacherError, match="Two teachers are named 'eupe_vitt16'"):
        build_teachers([spec, spec])


@pytest.mark.parametrize("spec, field", [
    (TeacherSpec(kind="hed", model="vgg16"), "model"),
    (TeacherSpec(kind="mobilenet_v2", weights="x.pt"), "weights"),
    (TeacherSpec(kind="eupe", model="eupe_vitt16", patch_layer="blocks.1"), "patch_layer"),
    (TeacherSpec(kind="hf", model="org/x", call="features"), "call"),
])
def test_fields_a_kind_does_not_use_are_rejected(spec, field):
    with pytest.raises(TeacherError, match=f"does not use \\['{field}'\\]"):
        build_teacher(spec)
