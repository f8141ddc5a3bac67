from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from eupe.benchmark import BACKENDS, BenchConfig, draw_chart, markdown_table, run_benchmark, write_csv
from eupe.benchmark.runner import BenchResult
from tests.helpers import tiny_vit


@pytest.fixture(scope="module")
def results():
    cfg = BenchConfig(sizes=[32], batch_sizes=[1, 2], backends=["eager", "torch-int8", "cuda-bf16"], warmup=1,
                      rounds=3)
    return run_benchmark(cfg, models={"tiny": tiny_vit().eval()})


def test_every_combination_is_reported(results):
    assert [(r.size, r.batch, r.backend) for r in results] == [
        (32, b, k) for b in (1, 2) for k in ("eager", "torch-int8", "cuda-bf16")]
    for r in results:
        if r.backend == "cuda-bf16" and not torch.cuda.is_available():
            assert r.error == "no CUDA device" and not r.times_ms
        else:
            assert len(r.times_ms) == 3 and all(t > 0 for t in r.times_ms) and not r.error
            assert r.images_per_s == pytest.approx(1000 * r.batch / r.median_ms)
            assert r.spread_ms[0] <= r.median_ms <= r.spread_ms[1]
        assert r.gflops_per_image > 0


def test_reports(tmp_path, results):
    table = markdown_table(results)
    assert table.count("\n") == 2 + len(results) and "| tiny | 32 | 2 | torch-int8 |" in table
    path = write_csv(results, tmp_path / "bench.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    eager = {(r["size"], r["batch"]): float(r["median_ms"]) for r in rows if r["backend"] == "eager"}
    for r in (r for r in rows if not r["error"]):  # every timed row is compared with eager at its own shape
        expected = eager[(r["size"], r["batch"])] / float(r["median_ms"])
        assert float(r["speedup_vs_eager"]) == pytest.approx(expected, rel=1e-6)
    png = draw_chart(results, tmp_path / "bench.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300


def test_conversions_are_built_once_per_model_unless_per_shape(monkeypatch):
    from eupe.benchmark.backends import Backend

    builds = []

    def build(model, example, ctx):
        builds.append(tuple(example.shape))
        return lambda x: model(x)

    monkeypatch.setitem(BACKENDS, "once", Backend("once", "cpu", build))
    monkeypatch.setitem(BACKENDS, "each", Backend("each", "cpu", build, per_shape=True))
    cfg = BenchConfig(sizes=[32, 48], batch_sizes=[1, 2], backends=["once"], warmup=0, rounds=1)
    run_benchmark(cfg, models={"tiny": tiny_vit().eval()})
    assert builds == [(1, 3, 32, 32)]
    builds.clear()
    run_benchmark(BenchConfig(sizes=[32, 48], batch_sizes=[1], backends=["each"], warmup=0, rounds=1),
                  models={"tiny": tiny_vit().eval()})
    assert builds == [(1, 3, 32, 32), (1, 3, 48, 48)]


def test_statistics_are_robust():
    r = BenchResult("m", 32, 4, "eager", times_ms=[10.0, 12.0, 11.0, 100.0, 9.0])
    assert r.median_ms == 11.0 and r.images_per_s == pytest.approx(4000 / 11.0)
    assert r.spread_ms == (10.0, 12.0)


def test_invalid_config():
    with pytest.raises(ValueError, match="Unknown backend"):
        run_benchmark(BenchConfig(backends=["tensorrt"]))
    with pytest.raises(ValueError, match="positive"):
        run_benchmark(BenchConfig(rounds=0))
    with pytest.raises(ValueError, match=r"threads \(-2\) and depth \(0\) must be >= 0"):
        run_benchmark(BenchConfig(threads=-2))
    with pytest.raises(ValueError, match=r"sizes \[33\] are not multiples of eupe_vitt16's token stride 16.*"
                                         r"33 -> 32 or 48"):
        run_benchmark(BenchConfig(models=["eupe_vitt16"], sizes=[32, 33], depth=1))


def test_optional_backends_explain_themselves(monkeypatch):
    monkeypatch.setattr("eupe.benchmark.backends.available", lambda *a, **k: False)  # as if nothing is installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for backend in BACKENDS.values():
        reason = backend.unavailable_reason()
        if backend.device == "cuda":
            assert reason == "no CUDA device"
        elif backend.requires:
            assert reason is not None and "pip install" in reason, (backend.name, reason)
        else:
            assert reason is None, backend.name


def test_onnxruntime_backends(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    cfg = BenchConfig(sizes=[32], batch_sizes=[2], backends=["eager", "onnxruntime", "onnxruntime-int8"],
                      warmup=1, rounds=2)
    out = run_benchmark(cfg, models={"tiny": tiny_vit().eval()})
    assert all(len(r.times_ms) == 2 and not r.error for r in out)
