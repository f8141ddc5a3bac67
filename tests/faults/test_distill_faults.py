"""Distillation faults and misuse end in a correct result or one clear error, never in a silent wrong result:
changed settings on resume, NaN/inf losses, gradients, features and weights, two runs in one folder, a full disk,
partial files of a killed write, and a feature cache interrupted with other settings."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import eupe
from eupe.config import ConfigError, load_config
from eupe.distill.cache import CacheError, FeatureCache
from eupe.distill.checkpoint import export_student
from eupe.distill.config import DistillConfig
from eupe.distill.monitor import read_metrics
from eupe.distill.trainer import CHANGES_FILE, Distiller, NonFiniteError
from eupe.loading import CheckpointError, non_finite_keys
from eupe.teachers import TeacherError, TeacherOutput
from eupe.utils.io import atomic_torch_save
from eupe.utils.outputs import OutputDirError
from tests.distill.helpers import TensorViews, random_images, tiny_overrides, tiny_teacher
from tests.distill.run_tiny import build

REPO = Path(__file__).resolve().parents[2]
RUN = ["train.iterations=6", "output.checkpoint_every=3"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread, as in tests/distill (see tests/conftest.py)."""
    yield


class Killed(Exception):
    """Stands in for a kill in the middle of a run."""


def run_until_killed(out: Path, overrides: list[str], at_step: int) -> None:
    """Runs a tiny distillation that dies when it reaches ``at_step`` (after its checkpoints before it)."""
    d = build(str(out), overrides)
    step = d.train_step

    def dying(i: int):
        if i == at_step:
            raise Killed
        return step(i)

    d.train_step = dying
    with pytest.raises(Killed):
        d.run()


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]


# ---- 1. changed settings on resume


def test_resume_with_other_settings_is_refused_naming_them(tmp_path):
    run_until_killed(tmp_path, RUN, at_step=4)  # ckpt-3 written, killed at step 4
    with pytest.raises(ConfigError) as err:
        build(str(tmp_path), RUN + ["train.lr=5e-2", "train.seed=1"])
    message = str(err.value)
    assert "step 3" in message and "train.lr: 2e-05 -> 0.05" in message and "train.seed: 0 -> 1" in message
    assert "resume.allow_changes=true" in message
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 2e-5  # not overwritten
    assert not (tmp_path / CHANGES_FILE).exists()


def test_resume_with_allowed_changes_records_both_settings(tmp_path):
    run_until_killed(tmp_path, RUN, at_step=4)
    before = losses(tmp_path)
    build(str(tmp_path), RUN + ["train.lr=5e-2", "resume.allow_changes=true"]).run()
    rows = [json.loads(line) for line in (tmp_path / CHANGES_FILE).read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 3 and rows[0]["checkpoint"] == "ckpt-00000003.pt"
    assert rows[0]["changes"] == {"train.lr": {"old": 2e-5, "new": 5e-2}}
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 5e-2
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert losses(tmp_path)[:3] == before[:3]  # the steps before the checkpoint are kept as they were
    assert metrics[3]["lr"] > 1e-3 > metrics[2]["lr"]  # the new LR applies from the resumed step on
    assert torch.load(tmp_path / "ckpt-00000006.pt", weights_only=False)["config"]["train"]["lr"] == 5e-2


def test_settings_that_change_no_result_may_change_on_resume(tmp_path):
    build(str(tmp_path / "ref"), RUN).run()
    run_until_killed(tmp_path / "run", RUN, at_step=4)
    build(str(tmp_path / "run"), RUN + ["output.keep_checkpoints=5", "output.checkpoint_every=2",
                                        "output.log_every=1", "data.workers=0"]).run()
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")  # bit-identical: they change nothing computed
    assert not (tmp_path / "run" / CHANGES_FILE).exists()


# ---- 2. non-finite values


def nan_gradient_at(d, step: int) -> None:
    """Makes one gradient NaN at ``step`` while the loss stays finite (as a huge LR did in the issue)."""
    original = d.train_step
    weight = d.student.heads["ta"]["cls"][0].weight

    def poisoned(i: int):
        if i == step:
            weight.register_hook(lambda g: torch.full_like(g, float("nan")))
        return original(i)

    d.train_step = poisoned


@pytest.mark.parametrize("clip", ["1.0", "0"])
def test_nan_gradient_norm_stops_before_the_optimizer_step(tmp_path, clip):
    d = build(str(tmp_path), ["train.iterations=6", "output.checkpoint_every=2", f"train.grad_clip={clip}"])
    nan_gradient_at(d, 3)
    weights = {}
    step = d.optimizer.step
    d.optimizer.step = lambda: (step(), weights.update({k: v.clone() for k, v in d.student.state_dict().items()}))
    with pytest.raises(NonFiniteError) as err:
        d.run()
    message = str(err.value)
    assert "gradient norm became nan at step 3" in message and "ckpt-00000002.pt" in message
    assert "resume.allow_changes=true" in message and ("grad_clip" in message) == (clip == "0")
    for key, value in d.student.state_dict().items():  # step 3 was not taken: the weights are those after step 2
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    assert not non_finite_keys(d.student.state_dict())
    assert [p.name for p in tmp_path.glob("ckpt-*.pt")] == ["ckpt-00000002.pt"]
    assert not non_finite_keys(torch.load(tmp_path / "ckpt-00000002.pt", weights_only=False)["model"])


@pytest.mark.parametrize("warmup, kept", [(0, []), (4, ["ckpt-00000001.pt"])])
def test_divergence_names_a_checkpoint_it_can_resume_from(tmp_path, warmup, kept):
    """A huge LR: the step after the first update (warmup 0) or after the second (warmup 4: the first has LR 0)
    diverges. The checkpoint saved just before holds the weights that diverge, so it is set aside, not named good;
    the advice (a lower LR, resuming from the last good checkpoint if there is one) then works."""
    base = ["train.iterations=8", "output.checkpoint_every=1", f"train.warmup_iterations={warmup}", "train.grad_clip=0"]
    with pytest.raises(NonFiniteError) as err:
        build(str(tmp_path), base + ["train.lr=1e8"]).run()
    message, diverged = str(err.value), len(kept) + 1
    assert f"step {diverged}" in message and "lower train.lr" in message
    assert f"ckpt-{diverged:08d}.pt, saved just before, holds weights that diverge" in message
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*.pt"))] == kept + [f"ckpt-{diverged:08d}.diverged.pt"]
    if kept:
        assert f"The last good checkpoint is {tmp_path / kept[0]}" in message and "allow_changes=true" in message
    else:
        assert "No checkpoint precedes the divergence" in message and "it starts afresh" in message
    result = build(str(tmp_path), base + ["train.lr=1e-3", "resume.allow_changes=true"]).run()  # the advice
    assert result.steps == 8 and math.isfinite(result.final_loss)
    if kept:
        assert json.loads((tmp_path / CHANGES_FILE).read_text())["step"] == 1
    eupe.load("eupe_vitt16", weights=result.export_path, embed_dim=32, depth=1, num_heads=2)  # finite, loadable


def test_non_finite_weights_are_never_written_as_a_checkpoint(tmp_path):
    d = build(str(tmp_path), ["train.iterations=2", "output.checkpoint_every=2"])
    d.run()
    d.step = 3
    with torch.no_grad():
        d.student.backbone.norm.weight[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"At step 3 .*backbone\.norm\.weight.*no checkpoint was written"):
        d.save()
    assert [p.name for p in tmp_path.iterdir() if "ckpt" in p.name] == ["ckpt-00000002.pt"]  # no temporary left


def test_a_non_finite_checkpoint_is_not_resumed(tmp_path):
    build(str(tmp_path), ["train.iterations=2", "output.checkpoint_every=2"]).run()
    path = tmp_path / "ckpt-00000002.pt"
    payload = torch.load(path, weights_only=False)
    payload["model"]["backbone.cls_token"].fill_(float("nan"))  # as written by the code before this fix
    torch.save(payload, path)
    with pytest.raises(NonFiniteError, match=r"ckpt-00000002\.pt holds NaN/inf .*backbone\.cls_token"):
        build(str(tmp_path), ["train.iterations=2", "output.checkpoint_every=2"])


def test_nan_teacher_features_are_blamed_on_the_teacher_not_the_lr(tmp_path):
    d = build(str(tmp_path), ["train.iterations=4"])
    original = d.train_step

    def broken_teacher(i: int):
        if i == 2:
            d.teachers[1].register_forward_hook(
                lambda m, a, out: TeacherOutput(out.summary * float("nan"), out.patches))
        return original(i)

    d.train_step = broken_teacher
    with pytest.raises(TeacherError, match=r"at step 2 because teacher\(s\) tb gave NaN/inf features"):
        d.run()


def test_nan_teacher_features_while_measuring_statistics_name_the_teacher(tmp_path):
    d = build(str(tmp_path), ["train.iterations=2"])
    d.teachers[0].register_forward_hook(lambda m, a, out: TeacherOutput(out.summary, out.patches * float("inf")))
    with pytest.raises(TeacherError, match=r"statistics of teacher\(s\) ta are NaN/inf"):
        d.run()


def test_teacher_features_beyond_float16_are_not_cached_as_infinities(tmp_path, monkeypatch):
    from eupe.teachers.eupe_teacher import BackboneTeacher

    features = BackboneTeacher.features
    monkeypatch.setattr(BackboneTeacher, "features",  # a teacher whose raw features reach 1e6 (float16: 65504)
                        lambda self, x: TeacherOutput(*(t * 1e6 for t in vars(features(self, x)).values())))
    with pytest.raises(CacheError, match=r"Teacher ta gives summary features with values up to .*float16"):
        build(str(tmp_path), ["train.iterations=2", "cache.enabled=true", "cache.views_per_image=1"])


def test_student_init_with_non_finite_weights_is_refused(tmp_path):
    d = build(str(tmp_path / "a"), ["train.iterations=1"])
    state = d.student.state_dict()
    state["backbone.blocks.0.mlp.fc1.weight"][0, 0] = float("nan")
    export_student(tmp_path / "bad.pt", state, {})
    with pytest.raises(CheckpointError, match=r"bad\.pt holds NaN/inf values in 1 .*blocks\.0\.mlp\.fc1\.weight"):
        build(str(tmp_path / "b"), ["train.iterations=1", f"student.init={tmp_path / 'bad.pt'}"])


# ---- 4. two runs, one folder


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    first = build(str(tmp_path), ["train.iterations=2"])
    with pytest.raises(OutputDirError, match="another eupe distill is writing to"):
        build(str(tmp_path), ["train.iterations=2"])
    first.run()
    build(str(tmp_path), ["train.iterations=2"]).run()  # released when the first run ended
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1]


def test_a_second_process_is_refused_and_writes_nothing(tmp_path):
    first = build(str(tmp_path), ["train.iterations=2"])
    proc = subprocess.run([sys.executable, "-m", "tests.distill.run_tiny", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "another eupe distill is writing to" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
    first.run()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1]


# ---- 5. full disk, partial files, interrupted cache


class FullDisk(io.RawIOBase):
    """A file on a disk with ``free`` bytes left: writes past them fail with ENOSPC, as the kernel's do."""

    def __init__(self, path, free: int) -> None:
        self.file, self.free = open(path, "wb"), free

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        super().close()


def full_disk(path, mode="r", free: int = 4096):
    """``open`` of eupe.utils.io on a disk with ``free`` bytes left."""
    return FullDisk(path, free) if mode == "wb" else open(path, mode)


def test_torch_save_on_a_full_disk_raises_enospc_not_unexpected_pos(tmp_path, monkeypatch):
    monkeypatch.setattr("eupe.utils.io.open", full_disk, raising=False)
    with pytest.raises(OSError) as err:
        atomic_torch_save({"w": torch.zeros(10_000)}, tmp_path / "ckpt.pt")
    assert err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # the partial temporary file is gone


def test_full_disk_during_a_checkpoint_is_one_clear_error_naming_the_folder(tmp_path, monkeypatch):
    d = build(str(tmp_path), ["train.iterations=4", "output.checkpoint_every=2"])
    monkeypatch.setattr("eupe.utils.io.open", full_disk, raising=False)
    with pytest.raises(OutputDirError) as err:
        d.run()
    assert f"no space left on device while writing to {tmp_path}" in str(err.value)
    assert "unexpected pos" not in str(err.value)
    assert not [p for p in tmp_path.iterdir() if "ckpt" in p.name]


def test_partial_files_of_a_killed_write_are_removed_at_start(tmp_path):
    (tmp_path / "teacher_cache").mkdir(parents=True)
    stale = [tmp_path / ".ckpt-00000003.pt.k2j4h5g6.tmp", tmp_path / "teacher_cache" / ".s0-00001.pt.abcd1234.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "sub" / ".ckpt-1.pt.abcd1234.tmp"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    build(str(tmp_path), ["train.iterations=1", "cache.enabled=true", "cache.views_per_image=1"])
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_partial_files_of_a_live_run_are_not_touched(tmp_path):
    first = build(str(tmp_path), ["train.iterations=1"])
    live = tmp_path / ".ckpt-00000001.pt.k2j4h5g6.tmp"
    live.write_bytes(b"being written")
    with pytest.raises(OutputDirError):
        build(str(tmp_path), ["train.iterations=1"])
    assert live.exists()
    first.run()


def test_an_interrupted_cache_build_is_not_resumed_with_other_settings(tmp_path, monkeypatch):
    args = ["train.iterations=2", "cache.enabled=true", "cache.views_per_image=2", "cache.shard_size=8",
            f"cache.dir={tmp_path / 'cache'}"]
    compute, calls = FeatureCache._compute_shard, []

    def dies_after_one_shard(*a, **k):
        if calls:
            raise Killed
        calls.append(1)
        return compute(*a, **k)

    monkeypatch.setattr(FeatureCache, "_compute_shard", staticmethod(dies_after_one_shard))
    with pytest.raises(Killed):
        build(str(tmp_path / "a"), args)
    monkeypatch.setattr(FeatureCache, "_compute_shard", staticmethod(compute))
    assert len(list((tmp_path / "cache").glob("s0-*.pt"))) == 1
    with pytest.raises(CacheError, match="built for another run"):
        build(str(tmp_path / "b"), args + ["train.seed=1"])  # the one shard holds other views
    d = build(str(tmp_path / "c"), args)  # the same settings complete it
    assert len(list((tmp_path / "cache").glob("s0-*.pt"))) == 4 and d.cache.meta["shard_size"] == 8


def test_a_cache_of_other_images_is_refused(tmp_path):
    def run(out: str, images: int):
        cfg = load_config(DistillConfig, None, tiny_overrides(tmp_path / out) + [
            "train.iterations=1", "cache.enabled=true", "cache.views_per_image=1", f"cache.dir={tmp_path / 'c'}"])
        return Distiller(cfg, teachers=[tiny_teacher("ta", 1, dim=24)], primary=TensorViews(random_images(images), 32))

    run("a", 16)
    with pytest.raises(CacheError, match=r"built for image sources of \[16, 0\] images; they now hold \[20, 0\]"):
        run("b", 20)  # the same folder with four images more: rows would map to other images


def test_cache_shards_without_their_settings_are_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    torch.save({}, tmp_path / "cache" / "s0-00000.pt")  # an interrupted build of an older version: no meta.json
    with pytest.raises(CacheError, match="no meta.json"):
        build(str(tmp_path), ["train.iterations=1", "cache.enabled=true", f"cache.dir={tmp_path / 'cache'}"])
