"""The console entry point: --version, python -m eupe, and one clear line (not a traceback) for user errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import eupe
from eupe.cli.main import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"eupe {eupe.__version__}"


def test_python_dash_m_eupe_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "eupe", "distill", "--config", "stage2", "--print-config"],
                            capture_output=True, text=True, check=True)
    assert "stage: 2" in result.stdout


def test_user_errors_name_the_command_and_exit_2(capsys):
    assert main(["distill", "--config", "stage9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eupe distill: error: No distill config named 'stage9'") and "Traceback" not in err


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (nested) subcommand parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def test_no_help_shows_restructuredtext_markup():
    parsers = _parsers(build_parser())
    assert len(parsers) > 15  # every command, eval protocol, visualize kind and vlm command
    for parser in parsers:
        text = parser.format_help() + parser.format_usage()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, parser.prog
    assert any("`eupe eval knn`: k-NN" in p.format_help() for p in parsers)  # the markup is converted, not lost
