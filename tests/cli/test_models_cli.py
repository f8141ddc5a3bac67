from __future__ import annotations

from eupe.cli.main import main


def test_models_lists_released(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "eupe_vits16" in out and "hf://facebook/EUPE-ViT-S/EUPE-ViT-S.pt" in out and "vitl16" not in out


def test_models_prints_exact_parameter_counts(capsys):
    import eupe
    from eupe.cli.models import format_count

    assert main(["models", "eupe_vitt16"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("eupe_vitt16"))
    exact = sum(p.numel() for p in eupe.create_model("eupe_vitt16").parameters())
    assert format_count(exact) in row.split() and format_count(exact) == "5.49M"
    assert format_count(1_890_000_000) == "1.89B"


def test_a_pattern_that_matches_nothing_is_an_error_not_an_empty_table(capsys):
    assert main(["models", "zzz*"]) == 2
    assert "eupe models: error: no model matches 'zzz*'" in capsys.readouterr().err
