"""``--config NAME`` always means the shipped config and ``--config PATH`` a file: a stray file or folder of that
name in the current folder never replaces the paper's settings silently, and every miss says how to pick the
other."""

from __future__ import annotations

import logging

import pytest

from eupe.config import ConfigError, resolve_config


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_bare_name_is_the_shipped_config_even_beside_a_file_of_that_name(here, caplog):
    (here / "stage2.yaml").write_text("train: {lr: 0.5}\n")
    with caplog.at_level(logging.WARNING):
        path = resolve_config("distill", "stage2")
    assert path.parent.name == "distill" and path.parent.parent.name == "configs"
    assert "not the file stage2.yaml of the current folder (pass ./stage2.yaml" in caplog.text
    assert resolve_config("distill", "./stage2.yaml") == here.joinpath("stage2.yaml").relative_to(here)


def test_a_folder_named_like_a_config_does_not_break_the_shipped_one(here, caplog):
    (here / "distill").mkdir()  # e.g. the runs of earlier demos
    with caplog.at_level(logging.WARNING):
        assert resolve_config("demo", "distill").name == "distill.yaml"
    assert not caplog.text


def test_a_local_file_with_a_name_that_is_not_shipped_needs_a_path(here):
    (here / "myrun").write_text("train: {lr: 0.5}\n")
    with pytest.raises(ConfigError, match=r"No distill config named 'myrun'.*pass \./myrun"):
        resolve_config("distill", "myrun")
    assert resolve_config("distill", "./myrun").read_text() == "train: {lr: 0.5}\n"


def test_a_missing_yaml_named_like_a_shipped_config_points_to_its_name(here):
    with pytest.raises(ConfigError, match="stage3.yaml does not exist; for the shipped distill config, pass its name "
                                          "stage3"):
        resolve_config("distill", "stage3.yaml")


def test_malformed_yaml_in_a_file_or_an_override_is_one_error_naming_it(tmp_path):
    from eupe.config import load_config
    from eupe.extract import ExtractConfig

    broken = tmp_path / "run.yaml"
    broken.write_text("batch_size: [unclosed\n")
    with pytest.raises(ConfigError, match=f"Config file {broken} is not valid YAML: expected ',' or ']'.* line 2"):
        load_config(ExtractConfig, broken)
    with pytest.raises(ConfigError, match=r"Override 'layers=\[1,': the value is not valid YAML"):
        load_config(ExtractConfig, None, ["layers=[1,"])
