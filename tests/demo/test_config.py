"""The shipped demo config loads with its stand-in teachers registered; its data path and hint come from it."""

from __future__ import annotations

import pytest

from eupe.config import shipped_configs
from eupe.demo.distill import load_demo_config, prepare_data
from eupe.teachers import teacher_kinds


def test_the_demo_config_is_shipped_and_loads():
    assert "distill" in shipped_configs("demo")
    cfg = load_demo_config()
    assert {s.train.stage for s in (cfg.stage1, cfg.stage2, cfg.stage3)} == {1, 2, 3}
    assert {t.kind for t in cfg.teachers} == {"efficientnet_lite2", "mobilenet_v2", "hed"}
    assert {"efficientnet_lite2", "mobilenet_v2", "hed"} <= set(teacher_kinds())  # registered by eupe.demo
    assert cfg.images and "openclipart" in cfg.images_install


def test_missing_images_name_the_configured_install_hint(tmp_path):
    cfg = load_demo_config("distill", [f"images={tmp_path / 'none'}", "images_install=get the pictures"])
    with pytest.raises(FileNotFoundError, match="get the pictures"):
        prepare_data(cfg)
