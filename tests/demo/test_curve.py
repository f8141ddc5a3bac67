"""The stage-1 compute curve: one demo per budget with the warm-up share kept, one shared teacher cache, the
baselines measured once, finished points skipped on a rerun, other settings refused (the stages themselves are
stand-ins here: their training is tested in tests/distill)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from eupe.demo import curve
from eupe.demo.distill import PROXY_ROW, load_demo_config, student_row
from eupe.eval.stats import ConfidenceInterval


def _ci(estimate: float, low: float, high: float) -> ConfidenceInterval:
    return ConfidenceInterval(estimate, low, high, confidence=0.95, resamples=100)


@pytest.fixture
def stand_ins(monkeypatch):
    """Records what each stage run got; the proxy's k-NN grows with its stage-1 iterations."""
    calls = {"stages": [], "baselines": 0}
    monkeypatch.setattr(curve, "prepare_data", lambda cfg: SimpleNamespace(eval_class_names=["a", "b"]))
    monkeypatch.setattr(curve, "build_teachers", lambda specs: {"t": object()})

    def run_stages(cfg, data, teachers, out, teacher_cache=None):
        train = cfg.stage1.train
        calls["stages"].append((train.iterations, train.warmup_iterations, out.name, teacher_cache))
        return SimpleNamespace(iterations=train.iterations), SimpleNamespace(iterations=train.iterations)

    def evaluate(cfg, data, teachers, proxy, student):
        if proxy is None:
            calls["baselines"] += 1
            return {"teacher t": _ci(40.0, 35.0, 45.0)}
        score = float(proxy.iterations) / 10
        return {PROXY_ROW: _ci(score, score - 2, score + 2),
                student_row(cfg): _ci(score - 1, score - 3, score + 1)}

    monkeypatch.setattr(curve, "run_stages", run_stages)
    monkeypatch.setattr(curve, "evaluate", evaluate)
    return calls


def test_each_budget_runs_once_with_the_same_warmup_share_and_one_teacher_cache(tmp_path, stand_ins):
    cfg = load_demo_config("distill", [f"output_dir={tmp_path}", "stage1.train.iterations=100",
                                       "stage1.train.warmup_iterations=10"])

    report = curve.run_compute_curve(cfg, [200, 50, 100, 50])

    assert [(n, w, out) for n, w, out, _ in stand_ins["stages"]] == [
        (50, 5, "stage1_50"), (100, 10, "stage1_100"), (200, 20, "stage1_200")]
    assert {cache for *_, cache in stand_ins["stages"]} == {tmp_path / "teacher_cache"}
    assert stand_ins["baselines"] == 1
    assert [p["proxy"]["top1"] for p in report["points"]] == [5.0, 10.0, 20.0]
    assert report["points"][0]["student"]["ci95"] == [2.0, 6.0]
    assert report["points"][1]["stage1_images"] == 100 * cfg.stage1.train.global_batch_size
    assert json.loads((tmp_path / "curve.json").read_text()) == report
    assert (tmp_path / "curve.png").is_file()


def test_a_rerun_skips_finished_points_and_refuses_other_settings(tmp_path, stand_ins):
    cfg = load_demo_config("distill", [f"output_dir={tmp_path}"])
    curve.run_compute_curve(cfg, [20, 40])
    stand_ins["stages"].clear()

    report = curve.run_compute_curve(cfg, [20, 40, 80])

    assert [n for n, *_ in stand_ins["stages"]] == [80]
    assert [p["stage1_iterations"] for p in report["points"]] == [20, 40, 80]
    other = load_demo_config("distill", [f"output_dir={tmp_path}", "stage2.train.iterations=7"])
    with pytest.raises(ValueError, match="other settings"):
        curve.run_compute_curve(other, [20])


def test_bad_budgets_are_refused_before_any_work(tmp_path, stand_ins):
    cfg = load_demo_config("distill", [f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="must be positive"):
        curve.run_compute_curve(cfg, [10, 0])
    with pytest.raises(ValueError, match="at least one"):
        curve.run_compute_curve(cfg, [])
    assert stand_ins["stages"] == []
