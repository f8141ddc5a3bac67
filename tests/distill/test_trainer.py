import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eupe.distill.monitor import read_metrics
from eupe.distill.trainer import NonFiniteError
from tests.distill.helpers import TensorViews, random_images
from tests.distill.run_tiny import build

REPO = Path(__file__).resolve().parents[2]
LOSS_KEYS = ("loss", "loss/ta/cls", "loss/ta/patch", "loss/tb/cls", "loss/tb/patch", "lr")


def losses(out_dir):
    return [{k: row[k] for k in ("step",) + LOSS_KEYS} for row in read_metrics(Path(out_dir) / "metrics.jsonl")]


def test_run_writes_metrics_checkpoints_export_and_plot(tmp_path):
    result = build(str(tmp_path), ["train.iterations=4", "output.checkpoint_every=2", "output.keep_checkpoints=1",
                                   "train.accumulation_steps=2"]).run()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.jsonl", "config.yaml", "student.pt", "student.norms.pt", "losses.png", "summary.json"} <= names
    assert sorted(n for n in names if n.startswith("ckpt-")) == ["ckpt-00000004.pt"]  # only the last kept
    rows = losses(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(r["loss"] > 0 for r in rows)
    ckpt = torch.load(tmp_path / "ckpt-00000004.pt", weights_only=False)
    assert {"model", "optimizer", "rng", "data", "normalizer", "step", "config"} <= set(ckpt)
    assert ckpt["data"]["primary_steps"] == 4 and bool(ckpt["normalizer"]["finalized"])
    assert result.export_path.is_file() and result.steps == 4


def test_training_reduces_the_loss(tmp_path):
    d = build(str(tmp_path), ["train.iterations=16", "train.lr=5e-3", "train.warmup_iterations=2",
                              "output.checkpoint_every=100"])
    d.run()
    rows = losses(tmp_path)
    first, last = sum(r["loss"] for r in rows[:4]) / 4, sum(r["loss"] for r in rows[-4:]) / 4
    assert last < 0.8 * first


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    args = ["train.iterations=8", "output.checkpoint_every=3"]
    build(str(tmp_path / "ref"), args).run()  # one thread, as run_tiny (conftest): bit-identical kernels
    _kill_after_checkpoint(tmp_path / "killed", args)
    build(str(tmp_path / "killed"), args).run()  # the rerun: resumes from ckpt-3
    assert losses(tmp_path / "killed") == losses(tmp_path / "ref")


def _kill_after_checkpoint(killed, args):
    """Runs the trainer in a subprocess and SIGKILLs it once ``ckpt-3`` exists (a step or two later)."""
    cmd = [sys.executable, "-m", "tests.distill.run_tiny", str(killed), *args]
    env = {**os.environ, "TINY_STEP_SLEEP": "0.2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (killed / "ckpt-00000003.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint written in time"
        time.sleep(0.05)
    time.sleep(0.5)  # let it log a step or two past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "student.pt").exists()
    assert max(r["step"] for r in losses(killed)) >= 2  # it died mid-run, past its checkpoint


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    d = build(str(tmp_path), ["train.iterations=6", "output.checkpoint_every=2"])
    original = d.train_step

    def poisoned(step):
        if step == 3:
            d.student.heads["ta"]["cls"][0].weight.data.fill_(float("nan"))
        return original(step)

    d.train_step = poisoned
    with pytest.raises(NonFiniteError, match="step 3"):
        d.run()
    assert [p.name for p in tmp_path.glob("ckpt-*.pt")] == ["ckpt-00000002.pt"]
    ckpt = torch.load(tmp_path / "ckpt-00000002.pt", weights_only=False)
    assert torch.isfinite(ckpt["model"]["backbone.projectors.ta.cls.0.weight"]).all()


def test_feature_cache_trains_without_rerunning_teachers(tmp_path, monkeypatch):
    args = ["train.iterations=6", "cache.enabled=true", "cache.views_per_image=2", "cache.shard_size=8",
            "train.global_batch_size=4"]
    d = build(str(tmp_path / "a"), args + [f"cache.dir={tmp_path / 'cache'}"])
    calls = {"n": 0}
    for t in d.teachers:
        t.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    d.run()
    assert calls["n"] == 0  # the cache was built in the constructor, training only read it
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["views_per_image"] == 2 and len(list((tmp_path / "cache").glob("s0-*.pt"))) == 4
    # the cached targets equal the teachers' live outputs on the same view
    key = torch.tensor([[0, 5, 1]])
    view = d.stream.sources[0].view(5, 1, d.stream.view_seed(0, 5, 1))
    live = TensorViews(random_images(16), 32).view(5, 1, d.stream.view_seed(0, 5, 1))
    assert torch.allclose(view, live, atol=1 / 255)
    cached = d.cache.targets(key, ["ta"], torch.device("cpu"))["ta"]
    expected = d.teachers[0](live[None])
    assert torch.allclose(cached.summary, expected.summary, atol=1e-2, rtol=1e-2)
    # a second run with the same fingerprint reuses the shards: no shard is computed again, even when it asks for
    # another shard size (the cache keeps the layout it was written with)
    def no_recompute(*args, **kwargs):
        raise AssertionError("a complete cache was computed again")

    monkeypatch.setattr("eupe.distill.cache.FeatureCache._compute_shard", no_recompute)
    d2 = build(str(tmp_path / "b"), args[:-2] + ["cache.shard_size=4", "train.global_batch_size=4",
                                                f"cache.dir={tmp_path / 'cache'}"])
    assert d2.cache.meta["fingerprint"] == meta["fingerprint"] and d2.cache.shard_size == 8
    torch.testing.assert_close(d2.cache.targets(key, ["ta"], torch.device("cpu"))["ta"].summary, cached.summary)


def test_feature_cache_stores_targets_at_the_fixed_teacher_scale(tmp_path):
    d = build(str(tmp_path), ["train.iterations=2", "cache.enabled=true", "cache.views_per_image=1",
                              "data.augment.size=48", "data.teacher_scales=[48]", "train.global_batch_size=4"])
    view = d.stream.sources[0].view(3, 0, d.stream.view_seed(0, 3, 0))
    cached = d.cache.targets(torch.tensor([[0, 3, 0]]), ["ta"], torch.device("cpu"))["ta"]
    at_scale, native = d.teachers[0](view[None], (48, 48)), d.teachers[0](view[None])
    assert cached.patches.shape == at_scale.patches.shape != native.patches.shape  # 3x3 grid, not the native 2x2
    torch.testing.assert_close(cached.summary, at_scale.summary, atol=1e-2, rtol=1e-2)
    assert d.teachers[0].input_size == (32, 32)  # the teacher itself is not changed


def test_stage3_draws_student_and_teacher_scales_independently(tmp_path):
    d = build(str(tmp_path), ["train.iterations=6", "data.augment.size=48", "data.student_scales=[32, 48]",
                              "data.teacher_scales=[16, 32, 48]", "train.stage=3"])
    d.run()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    pairs = {(r["student_scale"], r["teacher_scale"]) for r in rows}
    assert len(pairs) > 1 and all(s in (32, 48) and t in (16, 32, 48) for s, t in pairs)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert pairs == {d.scales(i) for i in range(6)}  # a pure function of the step: identical after a resume


def test_teacher_without_a_patch_grid_is_one_clear_error(tmp_path):
    from eupe.teachers import Teacher, TeacherError, TeacherOutput

    class Flat(Teacher):
        def features(self, x):
            return TeacherOutput(x.mean((2, 3)), x.flatten(2))  # [B, C, N]: not a grid

    flat = Flat("flat", input_size=32)
    d = build(str(tmp_path), ["train.iterations=2"])
    d.teachers, d.names = [flat], ["flat"]
    with pytest.raises(TeacherError, match="flat"):
        d.measure_normalization()


def test_cache_shards_record_each_views_augmentation_seed(tmp_path):
    d = build(str(tmp_path), ["train.iterations=1", "cache.enabled=true", "cache.views_per_image=1",
                              "cache.shard_size=16", "cache.store_views=false"])
    shard = torch.load(tmp_path / "teacher_cache" / "s0-00000.pt", weights_only=True)
    assert shard["seeds"].tolist() == [d.stream.view_seed(0, i, 0) for i in range(16)]
    assert "views" not in shard and shard["valid"].all()
