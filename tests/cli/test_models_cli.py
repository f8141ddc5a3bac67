from __future__ import annotations

from eupe.cli.main import main


def test_models_lists_released(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "eupe_vits16" in out and "hf://facebook/EUPE-ViT-S/EUPE-ViT-S.pt" in out and "vitl16" not in out
