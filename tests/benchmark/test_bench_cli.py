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


def test_when_no_backend_runs_the_table_explains_and_one_error_line_says_so(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli.main(["bench", "--models", "eupe_vitt16", "--sizes", "32", "--batch-sizes", "1", "--backends", "cuda",
                     "--output-dir", str(tmp_path), "--set", "depth=1"])
    captured = capsys.readouterr()
    assert code == 1 and "no CUDA device" in captured.out
    assert "eupe bench: error: no backend ran (cuda: no CUDA device)" in captured.err


def test_bench_rejects_unknown_keys(tmp_path, capsys):
    assert cli.main(["bench", "--output-dir", str(tmp_path), "--set", "speed=fast"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_bench_prints_its_table_in_under_60_lines(tmp_path, capfd):
    import logging
    import sys

    import pytest

    pytest.importorskip("onnxruntime")
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stderr)
    level = root.level
    root.addHandler(handler)  # as the console script logs: every INFO line would show
    root.setLevel(logging.INFO)
    try:
        code = cli.main(["bench", "--models", "eupe_vitt16", "--sizes", "32", "--batch-sizes", "1", "--backends",
                         "eager,onnxruntime", "--output-dir", str(tmp_path), "--set", "rounds=2", "--set", "warmup=1",
                         "--set", "depth=1"])
    finally:  # the handler writes to this test's captured stderr, which closes with the test
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capfd.readouterr()
    assert code == 0 and len((out + err).splitlines()) < 60, out + err
    assert "| eupe_vitt16 | 32 | 1 | onnxruntime |" in out


def test_a_backend_that_did_not_run_says_why_in_the_note_column():
    from eupe.benchmark import BenchResult, markdown_table

    row = markdown_table([BenchResult("m", 32, 1, "executorch", error="needs executorch: pip install x")]).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "–" and cells[-1] == "needs executorch: pip install x"


def test_peak_memory_is_never_a_rounded_zero():
    from eupe.benchmark import BenchResult, markdown_table

    results = [BenchResult("m", 32, 1, "onnxruntime", times_ms=[1.0], peak_mem_mib=0.3),
               BenchResult("m", 32, 1, "eager", times_ms=[1.0], peak_mem_note="no /proc/self/statm"),
               BenchResult("m", 32, 1, "executorch", error="needs executorch")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in markdown_table(results).splitlines()[2:]]
    assert [c[7] for c in cells] == ["<1", "n/a", "–"]
    assert cells[1][-1] == "peak memory n/a: no /proc/self/statm"


def test_bench_flags_come_from_the_config_dataclass():
    import argparse

    from eupe.benchmark import BenchConfig
    from eupe.cli import bench

    parser = argparse.ArgumentParser(prog="eupe").add_subparsers()
    bench.register(parser)
    command = parser.choices["bench"]
    assert set(command.get_default("config_flags")) == set(bench.BENCH_FLAGS)
    text = " ".join(command.format_help().split())
    assert "comma-separated batch sizes (default: 1,8)" in text and "(default: bench_results)" in text
    args = command.parse_args(["--sizes", "64, 96", "--backends", "eager,onnxruntime", "--rounds", "3"])
    cfg = bench.resolve_config(BenchConfig, args)
    assert (cfg.sizes, cfg.backends, cfg.rounds, cfg.models) == ([64, 96], ["eager", "onnxruntime"], 3,
                                                                 BenchConfig().models)
