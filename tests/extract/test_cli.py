"""``eupe extract`` end to end on a tiny tree with a tiny backbone."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re

import numpy as np
import pytest
from PIL import Image

import eupe.cli.main as cli_main
from eupe.cli import extract as cli_extract
from eupe.config import load_config, to_dict
from eupe.extract import ExtractConfig, FeatureStore


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("extract",))
    return cli_main.main


def test_extract_cli(tmp_path, main, capsys):
    src = tmp_path / "imgs"
    (src / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((30, 40, 3), 50 * i, np.uint8)).save(src / "a" / f"{i}.jpg")
    Image.new("CMYK", (40, 30), (0, 50, 100, 0)).save(src / "a" / "cmyk.jpg")
    (src / "a" / "zero.jpg").write_bytes(b"")
    args = ["extract", str(src), "--output-dir", str(tmp_path / "out"), "--model", "eupe_vitt16", "--weights",
            "random", "--arch", "depth=1", "--resolution", "32", "--num-workers", "0", "--patch-tokens",
            "--format", "npy", "--set", "shard_size=2", "--no-progress"]
    assert main(args) == 0
    assert "4 images" in capsys.readouterr().out
    store = FeatureStore(tmp_path / "out")
    assert store.keys == ["cls", "patch"] and store.load("patch").shape == (4, 4, 192)
    assert store.manifest["settings"]["shard_size"] == 2 and store.manifest["num_shards"] == 3
    with open(tmp_path / "out" / "skipped.csv") as f:
        assert [r["path"].endswith("zero.jpg") for r in csv.DictReader(f)] == [True]
    assert main(args) == 0  # rerun: already complete

    assert main(["extract", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o2"), "--weights", "random",
                 "--arch", "depth=1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["extract", str(src), "--output-dir", str(tmp_path / "o3"), "--set", "bogus=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_extract_cli_takes_several_sources_and_records_them(tmp_path, main, capsys):
    for name in ("train/cat/0.png", "more/cat/1.png", "more/dog/2.png", "loose/3.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(tmp_path / name)
    sources = [str(tmp_path / "train"), str(tmp_path / "more"), str(tmp_path / "loose" / "3.png")]
    assert main(["extract", *sources, "--output-dir", str(tmp_path / "out"), "--weights", "random", "--arch",
                 "depth=1", "--model", "eupe_vitt16", "--resolution", "32", "--num-workers", "0",
                 "--no-progress"]) == 0
    assert "4 images" in capsys.readouterr().out
    store = FeatureStore(tmp_path / "out")
    assert store.manifest["sources"] == sources and store.manifest["class_names"] == ["cat", "dog"]
    with open(tmp_path / "out" / "index.csv") as f:
        assert [(r["class_name"], r["label"]) for r in csv.DictReader(f)] == [
            ("cat", "0"), ("cat", "0"), ("dog", "1"), ("", "")]


def extract_parser() -> argparse.ArgumentParser:
    subparsers = argparse.ArgumentParser(prog="eupe").add_subparsers()
    cli_extract.register(subparsers)
    return subparsers.choices["extract"]


def test_every_extract_setting_has_a_flag_showing_its_default():
    assert set(cli_extract.EXTRACT_FLAGS) == {f.name for f in dataclasses.fields(ExtractConfig)}
    text = " ".join(extract_parser().format_help().split())
    for expected in ("input size (default: 224)", "--resize-mode {crop,square}", "(default: crop)",
                     "images per shard (default: 1024)", "--patch-mean, --no-patch-mean",
                     "unset: the final output"):
        assert expected in text


def test_extract_set_example_is_a_real_setting():
    (action,) = [a for a in extract_parser()._actions if "--set" in a.option_strings]
    example = re.search(r"--set (\S+) \(repeatable;", action.help).group(1)
    assert to_dict(load_config(ExtractConfig, None, [example])) != to_dict(ExtractConfig())
