"""Every shipped config loads (regression test of eupe/configs/distill), overrides apply, bad keys are one error."""

from pathlib import Path

import pytest

from eupe.config import ConfigError, resolve_config, shipped_configs
from eupe.distill.config import CONFIG_GROUP, load_distill_config

SHIPPED = shipped_configs(CONFIG_GROUP)


def resolve_config_path(name):
    return resolve_config(CONFIG_GROUP, name)


def test_the_three_stages_are_shipped():
    assert SHIPPED == ["stage1", "stage2", "stage3"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads(name):
    cfg = load_distill_config(name)
    assert cfg.train.stage == int(name[-1]) and cfg.teachers


def test_paper_hyper_parameters():
    s1, s2, s3 = (load_distill_config(f"stage{i}") for i in (1, 2, 3))
    assert s1.student.model == "eupe_proxy_vitg16" and s1.student.head_hidden_dim == 1536
    assert s1.train.parallel == "fsdp" and {t.name for t in s1.teachers} == {"pe_core_g", "pe_lang_g", "dinov3_hplus"}
    assert (s2.train.global_batch_size, s2.train.iterations, s2.train.lr, s2.train.weight_decay) == (
        8192, 390_000, 2e-5, 1e-4)
    assert s2.data.student_scales == [256] and s2.student.head_hidden_dim == 3072
    assert (s3.train.global_batch_size, s3.train.iterations, s3.train.lr) == (4096, 100_000, 1e-5)
    assert s3.data.student_scales == s3.data.teacher_scales == [256, 384, 512] and s3.student.init
    for cfg in (s1, s2, s3):
        assert cfg.loss.patch_cosine_weight == 0.9 and cfg.loss.patch_smooth_l1_weight == 0.1
        assert cfg.train.norm_iterations == 500 and cfg.data.second_source_prob == 0.1


def test_overrides_and_paths(tmp_path):
    cfg = load_distill_config("stage2", ["train.lr=1e-4", "student.model=eupe_convnext_tiny",
                                         "data.augment.blur_p=0.1"])
    assert cfg.train.lr == 1e-4 and cfg.student.model == "eupe_convnext_tiny" and cfg.data.augment.blur_p == 0.1
    path = tmp_path / "mine.yaml"
    path.write_text(Path(resolve_config_path("stage2")).read_text())
    assert load_distill_config(str(path)).train.stage == 2


@pytest.mark.parametrize("overrides, match", [
    (["train.learning_rate=1"], "unknown key.*learning_rate"),
    (["data.augment.blurr=1"], "unknown key.*blurr"),
    (["train.amp=fp16"], "train.amp"),
    (["data.student_scales=[1024]"], "augment.size"),
])
def test_bad_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_distill_config("stage3", overrides)


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="stage2"):
        resolve_config_path("stage9")
