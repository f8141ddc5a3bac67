"""Every command that writes a folder locks it: a second ``eupe demo`` or ``hf`` export into a folder in use is
refused before any work, and an export clears the partial files a killed export left."""

from __future__ import annotations

import pytest
from filelock import FileLock

import eupe
from eupe.demo.distill import load_demo_config, run_demo
from eupe.export import export_model
from eupe.utils.outputs import OutputDirError


def test_a_second_demo_into_a_folder_in_use_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("eupe.demo.distill.prepare_data", lambda cfg: pytest.fail("the demo started working"))
    out = tmp_path / "demo"
    cfg = load_demo_config("distill", [f"output_dir={out}"])
    out.mkdir()
    with FileLock(out / ".lock"), pytest.raises(OutputDirError, match=f"another eupe demo is writing to {out}"):
        run_demo(cfg)


def test_hf_export_locks_its_folder_and_clears_partial_files(tmp_path):
    model = eupe.create_model("eupe_vitt16", depth=1)
    out = tmp_path / "hf"
    out.mkdir()
    with FileLock(out / ".lock"), pytest.raises(OutputDirError, match=f"another eupe export is writing to {out}"):
        export_model(model, "hf", out, verify=False)
    assert not (out / "config.json").exists()
    partial = out / ".model.safetensors.a1b2c3d4.tmp"  # what a killed atomic write leaves
    partial.write_bytes(b"half")
    result = export_model(model, "hf", out, verify=False)
    assert not partial.exists()
    assert {p.name for p in result.paths} == {"config.json", "model.safetensors", "preprocessor_config.json"}
