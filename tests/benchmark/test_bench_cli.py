from __future__ import annotations

import csv

import yaml

import eupe.cli.main as cli


def test_bench_writes_table_csv_and_chart(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"rounds": 5, "warmup": 1, "depth": 1}))
    code = cli.main(["bench", "--config", str(config), "--models", "eupe_vitt16,eupe_vits16",
                     "--sizes", "64", "--batch-sizes", "1", "--backends", "eager,torch-int8",
                     "--output-dir", str(tmp_path), "--set", "rounds=2"])
    out = capsys.readouterr().out
    assert code == 0 and "| eupe_vits16 | 64 | 1 | torch-int8 |" in out
    with open(tmp_path / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["rounds"] == "2" for r in rows)  # the override beats the YAML file
    assert (tmp_path / "bench.png").stat().st_size > 0
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["depth"] == 1 and saved["models"] == ["eupe_vitt16", "eupe_vits16"]


def test_bench_rejects_unknown_keys(tmp_path, capsys):
    assert cli.main(["bench", "--output-dir", str(tmp_path), "--set", "speed=fast"]) == 2
    assert "unknown key" in capsys.readouterr().err
