"""``eupe vlm build`` writes a folder the Auto classes reload; ``eupe vlm train --print-config`` resolves a stage."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from eupe.cli.main import main  # noqa: E402
from eupe.vlm import check_vlm_folder  # noqa: E402


def test_build_then_print_a_training_config(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "vlm"
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--image-size", "32", "--output", str(out)]) == 0
    assert "(4 visual tokens per image)" in capsys.readouterr().out
    check_vlm_folder(out)
    assert main(["vlm", "train", "--config", "stage_b", "--set", f"model={out}", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "stage: b" in printed and f"model: {out}" in printed and "lr: 2.0e-05" in printed


def test_build_refuses_a_non_empty_output(tiny_lm_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--output", str(tmp_path / "taken")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
