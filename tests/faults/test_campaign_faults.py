"""Cases found by the adversarial campaign over the CLI (README, Reliability): each was a traceback for a user error
or a silent wrong result, and is now one clear error line (or a correct result)."""

from __future__ import annotations

import pytest

import eupe
import eupe.cli.main as cli_main


@pytest.fixture
def main(monkeypatch, tmp_path):
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    return cli_main.main


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1]
    assert ": error: " in line and all(n in line for n in needles), err
    return line


def test_an_architecture_typo_is_one_line_listing_the_valid_arguments(main, tmp_path, capsys):
    with pytest.raises(ValueError, match="eupe_vitt16 has no architecture argument deepth; valid ones: depth, "):
        eupe.create_model("eupe_vitt16", deepth=1)
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(image)
    assert main(["extract", str(image), "--output-dir", str(tmp_path / "out"), "--model", "eupe_vitt16",
                 "--weights", "random", "--arch", "deepth=1", "--no-progress"]) == 2
    one_error_line(capsys, "deepth", "depth")
