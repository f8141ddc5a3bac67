"""The console entry point: --version, python -m eupe, and one clear line (not a traceback) for user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import eupe
from eupe.cli.main import main


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
