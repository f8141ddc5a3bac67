"""``eupe demo --curve N1,N2,...``: the demo's proxy and student k-NN against stage-1 compute.

Stage 1 (teachers -> proxy) is what the CPU demo lacks most: the student matches its proxy after a few dozen
stage-2 steps, so the proxy bounds the student. This runs the whole demo (stages 1-3 and the k-NN evaluation) once
per stage-1 budget, with everything else fixed: the same images, teachers, stage-2/3 settings and seed, the warm-up
kept at the same share of stage 1, and one teacher-feature cache shared by all budgets (computed once, so later
points pay only for training). The teachers, the random-init student and raw pixels are evaluated once.

Written to ``output_dir``: ``curve.json`` (every point with its 95% intervals, rewritten after each point; a rerun
with the same settings skips the finished points, one with other settings is refused) and ``curve.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from ..config import to_dict
from ..teachers import build_teachers
from ..utils.io import atomic_write_json
from ..utils.optional import available, install_hint
from ..utils.outputs import locked_output_dir
from ..viz.charts import line_chart
from .distill import PROXY_ROW, DemoConfig, evaluate, prepare_data, run_stages, student_row

logger = logging.getLogger(__name__)

CURVE_FILE = "curve.json"


def with_stage1_iterations(cfg: DemoConfig, iterations: int) -> DemoConfig:
    """``cfg`` with stage 1 trained for ``iterations`` steps, its warm-up kept at the same share."""
    if iterations < 1:
        raise ValueError(f"demo --curve: stage-1 iterations must be positive, got {iterations}")
    point = copy.deepcopy(cfg)
    train = point.stage1.train
    share = cfg.stage1.train.warmup_iterations / max(1, cfg.stage1.train.iterations)
    train.iterations, train.warmup_iterations = iterations, min(iterations - 1, round(share * iterations))
    return point


def run_compute_curve(cfg: DemoConfig, stage1_iterations: Sequence[int]) -> dict[str, Any]:
    """Runs the demo at each stage-1 budget into ``output_dir/stage1_<N>/``; returns (and writes) the curve."""
    budgets = sorted(set(stage1_iterations))
    if not budgets:
        raise ValueError("demo --curve: give at least one stage-1 iteration count, e.g. --curve 75,150,300")
    points = [with_stage1_iterations(cfg, n) for n in budgets]  # refuses bad budgets before any work
    with locked_output_dir(cfg.output_dir, "eupe demo --curve") as out:
        settings = to_dict(cfg)
        settings["stage1"]["train"].pop("iterations")
        settings["stage1"]["train"].pop("warmup_iterations")
        report = _resume(out / CURVE_FILE, settings)
        start = time.perf_counter()
        data = prepare_data(cfg)
        teachers = build_teachers(cfg.teachers)
        if not report["baselines"]:
            report["baselines"] = _rows(evaluate(cfg, data, teachers, None, None))
        done = {p["stage1_iterations"] for p in report["points"]}
        for n, point in zip(budgets, points):
            if n in done:
                logger.info("demo --curve: %d stage-1 iterations already measured", n)
                continue
            t0 = time.perf_counter()
            proxy, student = run_stages(point, data, teachers, out / f"stage1_{n}", teacher_cache=out / "teacher_cache")
            rows = _rows(evaluate(point, data, {}, proxy, student))
            report["points"].append({"stage1_iterations": n,
                                     "stage1_images": n * point.stage1.train.global_batch_size,
                                     "proxy": rows[PROXY_ROW], "student": rows[student_row(point)],
                                     "seconds": round(time.perf_counter() - t0, 1)})
            report["points"].sort(key=lambda p: p["stage1_iterations"])
            atomic_write_json(out / CURVE_FILE, report)
            logger.info("demo --curve: %d stage-1 iterations: proxy %.1f, student %.1f", n,
                        rows[PROXY_ROW]["top1"], rows[student_row(point)]["top1"])
        report["total_s"] = round(report.get("total_s", 0) + time.perf_counter() - start, 1)
        atomic_write_json(out / CURVE_FILE, report)
        if available("matplotlib"):
            _chart(report, out / "curve.png", len(data.eval_class_names))
        else:
            logger.info("curve.png not drawn: %s", install_hint("matplotlib"))
        return report


def _rows(intervals: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {name: {"top1": round(ci.estimate, 2), "ci95": [round(ci.low, 2), round(ci.high, 2)]}
            for name, ci in intervals.items()}


def _resume(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The finished points of an earlier run with the same settings, or a new report; other settings: refused."""
    if not path.is_file():
        return {"settings": settings, "baselines": {}, "points": []}
    report = json.loads(path.read_text())
    if report.get("settings") != settings:
        raise ValueError(f"{path} holds a curve measured with other settings; give another output_dir (or delete "
                         "it) to measure this one")
    return report


def _chart(report: dict[str, Any], path: Path, classes: int) -> None:
    """Proxy and student k-NN against stage-1 iterations, with the teachers, random init and pixels as lines."""
    xs = [p["stage1_iterations"] for p in report["points"]]
    series = {"proxy (stage 1)": [(x, p["proxy"]["top1"]) for x, p in zip(xs, report["points"])],
              "student (stage 3)": [(x, p["student"]["top1"]) for x, p in zip(xs, report["points"])]}
    bands = {"proxy (stage 1)": [p["proxy"]["ci95"] for p in report["points"]],
             "student (stage 3)": [p["student"]["ci95"] for p in report["points"]]}
    span = (min(xs), max(xs)) if xs else (0, 1)
    for name, row in report["baselines"].items():
        series[name] = [(span[0], row["top1"]), (span[1], row["top1"])]
    line_chart(series, path, title=f"Demo k-NN top-1 on {classes} held-out classes against stage-1 compute\n"
                                   "(shaded: 95% bootstrap interval over queries)",
               xlabel="stage-1 iterations (teachers -> proxy), log scale", ylabel="k-NN top-1 (%)", log_y=False,
               log_x=True, bands=bands, dashed=[n for n in report["baselines"]])
